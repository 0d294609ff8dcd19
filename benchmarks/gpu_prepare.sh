#!/usr/bin/env bash
# What benchmarks/gpu_check.sh needs on a GPU machine without network, gathered into .gpu/
# (git-ignored; carried by the device tool): the default model's config and tokenizer (not its
# weights), the TOFU files TOFU-mini reads, and wheels of DeepSpeed (built here without its compiled
# ops) and the packages it needs that the GPU image lacks, for Python 3.12.
# Usage: bash benchmarks/gpu_prepare.sh [TOFU_DIR]
set -eu
TOFU=${1:-${UNLEARN_TOFU_DIR:-../shared/data/tofu}}
MODEL=$(python -c "from unlearnkit.models.loading import resolve_model; print(resolve_model('smollm2'))")
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu/smollm2 .gpu/tofu
cp "$MODEL"/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json,chat_template.jinja} .gpu/smollm2/
cp "$TOFU"/{forget01.json,forget01_perturbed.json,forget10.json} .gpu/tofu/
mkdir -p .gpu/whl
DS_BUILD_OPS=0 python -m pip wheel -q --no-deps --no-build-isolation -w .gpu/whl deepspeed==0.19.8
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 hjson==3.1.0
du -sh .gpu
