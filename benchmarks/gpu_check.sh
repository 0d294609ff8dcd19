#!/usr/bin/env bash
# The CUDA training path, run on a GPU machine that has no network and no copy of the default
# model's weights (not a test: it prints figures and writes logs to $OUT).
#
#   bash benchmarks/gpu_check.sh            # needs .gpu/ prepared by benchmarks/gpu_prepare.sh
#
# What it runs, each step bounded by `timeout` and logged to $OUT/<step>.log:
#   1. the training tests (tiny models the tests build) on a machine where torch sees CUDA;
#   2. a SmolLM2-135M-shaped model with the real tokenizer and random weights (the weights do
#      not travel: 538 MB), fine-tuned on TOFU-mini forget10 as configs/finetune/tofu_mini_target.yaml
#      does, then unlearnt with IHL+FILA (LoRA) and NPO (full, frozen reference copy on the GPU),
#      all in `optim.precision: auto` (bf16 on CUDA); wall time and losses from each run's log;
#   3. two processes on the one GPU (`accelerate launch`, DDP): NCCL refuses two ranks on one
#      device, so this records what the launcher does there.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
ROOT=$(pwd)
mkdir -p /tmp/pkg && ln -sfn "$ROOT" /tmp/pkg/unlearnkit
export PYTHONPATH=/tmp/pkg PYTHONUNBUFFERED=1 UNLEARN_TOFU_DIR=$ROOT/.gpu/tofu HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export UNLEARN_CACHE=/tmp/unlearn-cache
if ls .gpu/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
step() { local name=$1; local limit=$2; shift 2; local t0; t0=$(date +%s%N)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; local rc=$?
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '%-14s rc=%-3s %6d.%03d s\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) | tee -a "$OUT/summary.txt"; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch,transformers,peft,accelerate;print('torch',torch.__version__,'cuda',torch.version.cuda,'bf16',torch.cuda.is_bf16_supported(),'transformers',transformers.__version__,'peft',peft.__version__,'accelerate',accelerate.__version__)"
} 2>&1 | tee "$OUT/summary.txt"

step tests 150 python3 -m pytest -q -x -p no:cacheprovider tests/test_losses.py tests/test_fila.py tests/test_train.py tests/test_precision.py -m "not slow"
step model 60 python3 - <<'PY'
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
torch.manual_seed(0)
cfg = AutoConfig.from_pretrained(".gpu/smollm2")
model = AutoModelForCausalLM.from_config(cfg)
model.save_pretrained("/tmp/models/smollm2-random")
AutoTokenizer.from_pretrained(".gpu/smollm2").save_pretrained("/tmp/models/smollm2-random")
print(sum(p.numel() for p in model.parameters()), "parameters")
PY
T=/tmp/models/smollm2-random
step finetune 180 python3 -m unlearnkit.cli train --config configs/finetune/tofu_mini_target.yaml \
  model=$T output_dir=/tmp/runs/target optim.precision=auto
step ihl_fila_lora 120 python3 -m unlearnkit.cli train --config configs/train/ihl_fila.yaml \
  model=/tmp/runs/target output_dir=/tmp/runs/ihl_fila optim.precision=auto
step npo_full 120 python3 -m unlearnkit.cli train --config configs/train/npo.yaml \
  model=/tmp/runs/target output_dir=/tmp/runs/npo mode=full optim.precision=auto
step ddp_2proc 90 python3 -m accelerate.commands.launch --config_file configs/accelerate/ddp.yaml --num_processes 2 \
  -m unlearnkit.cli train --config configs/train/ihl_fila.yaml model=/tmp/runs/target output_dir=/tmp/runs/ddp optim.precision=auto
for f in /tmp/runs/*/train_log.jsonl /tmp/runs/*/run.json; do [ -f "$f" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")")-$(basename "$f")"; done 2>/dev/null
nvidia-smi --query-gpu=memory.used --format=csv,noheader >>"$OUT/summary.txt"
cat "$OUT/summary.txt"
