#!/usr/bin/env bash
# What benchmarks/gpu_check.sh needs on a GPU machine without network, gathered into .gpu/
# (git-ignored; carried by the device tool): the default model's config and tokenizer (not its
# weights) and the TOFU files TOFU-mini reads. Usage: bash benchmarks/gpu_prepare.sh [TOFU_DIR]
set -eu
TOFU=${1:-${UNLEARN_TOFU_DIR:-../shared/data/tofu}}
MODEL=$(python -c "from unlearnkit.models.loading import resolve_model; print(resolve_model('smollm2'))")
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu/smollm2 .gpu/tofu
cp "$MODEL"/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json,chat_template.jinja} .gpu/smollm2/
cp "$TOFU"/{forget01.json,forget01_perturbed.json,forget10.json} .gpu/tofu/
du -sh .gpu
