#!/usr/bin/env bash
# The CUDA training path, run on a GPU machine that has no network and no copy of the default
# model's weights (not a test: it prints figures and writes logs to $OUT).
#
#   bash benchmarks/gpu_check.sh            # needs .gpu/ prepared by benchmarks/gpu_prepare.sh
#   STEPS="sharded_tests sharded_runs" bash benchmarks/gpu_check.sh     # only those steps
#
# What it runs, each step bounded by `timeout` and logged to $OUT/<step>.log:
#   1. the training tests (tiny models the tests build) on a machine where torch sees CUDA;
#   2. a SmolLM2-135M-shaped model with the real tokenizer and random weights (the weights do
#      not travel: 538 MB), fine-tuned on TOFU-mini forget10 as configs/finetune/tofu_mini_target.yaml
#      does, then unlearnt with IHL+FILA (LoRA) and NPO (full, frozen reference copy on the GPU),
#      all in `optim.precision: auto` (bf16 on CUDA); wall time and losses from each run's log;
#   3. two processes on the one GPU (`accelerate launch`, DDP): NCCL refuses two ranks on one
#      device, so this records what the launcher does there;
#   4. (sharded_tests) tests/test_distributed.py's GPU tests: FSDP and DeepSpeed ZeRO-3 launches end
#      where a plain run ends (DeepSpeed from .gpu/whl: it is no dependency of the project);
#   5. (sharded_runs) the SmolLM2-135M shape from step 2's random weights, unlearnt under FSDP (IHL+FILA
#      LoRA, NPO full) and DeepSpeed ZeRO-3 (NPO full), one process each, bf16: wall time, peak memory.
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

run_tests() { step tests 150 python3 -m pytest -q -x -p no:cacheprovider tests/test_losses.py tests/test_fila.py tests/test_train.py tests/test_precision.py -m "not slow"; }
run_model() { step model 60 python3 - <<'PY'
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
torch.manual_seed(0)
cfg = AutoConfig.from_pretrained(".gpu/smollm2")
model = AutoModelForCausalLM.from_config(cfg)
model.save_pretrained("/tmp/models/smollm2-random")
AutoTokenizer.from_pretrained(".gpu/smollm2").save_pretrained("/tmp/models/smollm2-random")
print(sum(p.numel() for p in model.parameters()), "parameters")
PY
}
T=/tmp/models/smollm2-random
run_finetune() { step finetune 180 python3 -m unlearnkit.cli train --config configs/finetune/tofu_mini_target.yaml \
  model=$T output_dir=/tmp/runs/target optim.precision=auto; }
run_unlearn() { step ihl_fila_lora 120 python3 -m unlearnkit.cli train --config configs/train/ihl_fila.yaml \
  model=/tmp/runs/target output_dir=/tmp/runs/ihl_fila optim.precision=auto
step npo_full 120 python3 -m unlearnkit.cli train --config configs/train/npo.yaml \
  model=/tmp/runs/target output_dir=/tmp/runs/npo mode=full optim.precision=auto; }
run_ddp() { step ddp_2proc 90 python3 -m accelerate.commands.launch --config_file configs/accelerate/ddp.yaml --num_processes 2 \
  -m unlearnkit.cli train --config configs/train/ihl_fila.yaml model=/tmp/runs/target output_dir=/tmp/runs/ddp optim.precision=auto; }
run_sharded_tests() { step sharded_tests 300 python3 -m pytest -q -x -s -p no:cacheprovider tests/test_distributed.py -k sharded_launches; }
SHARDED="python3 -m accelerate.commands.launch --num_processes 1 --config_file"  # + configs/accelerate/<engine>.yaml
run_sharded_runs() {  # from the random-weight model itself when no fine-tuned target was made in this call
  local base=/tmp/runs/target; [ -f $base/run.json ] || base=$T
  step ihl_fila_fsdp 120 $SHARDED configs/accelerate/fsdp.yaml -m unlearnkit.cli train --config configs/train/ihl_fila.yaml \
    model=$base output_dir=/tmp/runs/ihl_fila_fsdp optim.precision=auto
  step npo_fsdp 120 $SHARDED configs/accelerate/fsdp.yaml -m unlearnkit.cli train --config configs/train/npo.yaml \
    model=$base output_dir=/tmp/runs/npo_fsdp mode=full optim.precision=auto
  run_zero3
}
run_zero3() {
  local base=/tmp/runs/target; [ -f $base/run.json ] || base=$T
  step npo_zero3 150 $SHARDED configs/accelerate/deepspeed_zero3.yaml -m unlearnkit.cli train --config configs/train/npo.yaml \
    model=$base output_dir=/tmp/runs/npo_zero3 mode=full optim.precision=auto
}
for s in ${STEPS:-tests model finetune unlearn ddp sharded_tests sharded_runs}; do "run_$s"; done
for f in /tmp/runs/*/train_log.jsonl /tmp/runs/*/run.json; do [ -f "$f" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")")-$(basename "$f")"; done 2>/dev/null
nvidia-smi --query-gpu=memory.used --format=csv,noheader >>"$OUT/summary.txt"
# the device tool returns at most 8 files: everything but the summary goes back in one archive
(cd "$OUT" && tar czf /tmp/gpu_logs.tgz --exclude summary.txt . && find . -type f ! -name summary.txt -delete && mv /tmp/gpu_logs.tgz .)
cat "$OUT/summary.txt"
