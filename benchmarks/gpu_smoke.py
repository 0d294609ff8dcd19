"""CUDA smoke check of the training and evaluation paths on tiny models built on the spot
(not a test: CI has no GPU). Prints what it measured; exits non-zero on a failed check.

    python benchmarks/gpu_smoke.py

1. fine-tune a tiny Llama with `precision: auto` (bf16 autocast on CUDA), then IHL + FILA (LoRA)
   on it; both runs must finish with a merged checkpoint and a finite loss;
2. evaluate the unlearned model (engine transformers, teacher forcing on the GPU) in fp32 and bf16
   and compare answer probabilities with a CPU fp32 evaluation.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    import torch

    from conftest import build_tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from unlearnkit.config import from_dict
    from unlearnkit.evaluation.config import EvalConfig
    from unlearnkit.evaluation.harness import evaluate
    from unlearnkit.training.config import TrainConfig
    from unlearnkit.training.run import run_training

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    tmp = Path(tempfile.mkdtemp())
    os.environ["UNLEARN_CACHE"] = str(tmp / "cache")
    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.save_pretrained(tmp / "base")
    tok.save_pretrained(tmp / "base")
    failures = []
    quiet = lambda *_: None  # noqa: E731

    t0 = time.time()
    target = run_training(from_dict(TrainConfig, {
        "model": str(tmp / "base"), "output_dir": str(tmp / "target"), "method": {"name": "finetune"},
        "data": {"train": "synth/full?people=6&forget=2", "max_length": 128},
        "optim": {"max_steps": 60, "lr": 3e-3, "batch_size": 8, "save_steps": 20}}), log=quiet)
    run = json.loads((target / "run.json").read_text())
    print(f"finetune: {run.get('steps')} steps, precision {run.get('precision')}, {time.time() - t0:.1f} s")
    unlearned = run_training(from_dict(TrainConfig, {
        "model": str(target), "output_dir": str(tmp / "ihl_fila"), "method": {"name": "ihl"}, "mode": "lora",
        "lora": {"r": 4, "init": "fila"},
        "data": {"forget": "synth/forget?people=6&forget=2", "retain": "synth/retain?people=6&forget=2", "max_length": 128},
        "optim": {"max_steps": 10, "lr": 1e-3, "batch_size": 4}}), log=quiet)
    log = [json.loads(line) for line in (unlearned / "train_log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if "loss" in e]
    print(f"ihl+fila: {len(losses)} logged losses, last {losses[-1] if losses else None}")
    if not losses or not all(math.isfinite(x) for x in losses):
        failures.append("non-finite or missing IHL losses")

    probs = {}
    for name, dtype in (("cuda-fp32", "float32"), ("cuda-bf16", "bfloat16")):
        cfg = from_dict(EvalConfig, {"model": str(unlearned), "benchmark": "synthetic", "engine": "transformers",
                                     "forget": "synth/forget?people=6&forget=2", "retain": "synth/retain?people=6&forget=2",
                                     "dtype": dtype, "max_new_tokens": 16})
        t0 = time.time()
        res = evaluate(cfg, log=quiet)
        probs[name] = [it.probability for it in res.tasks["forget"].items]
        print(f"eval {name}: {time.time() - t0:.1f} s, forget P {res.tasks['forget'].aggregate['probability']:.4f}")
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import subprocess

    code = ("import json,sys; from unlearnkit.config import from_dict; from unlearnkit.evaluation.config import EvalConfig;"
            "from unlearnkit.evaluation.harness import evaluate;"
            f"cfg=from_dict(EvalConfig, {{'model': {str(unlearned)!r}, 'benchmark': 'synthetic', 'engine': 'transformers',"
            "'forget': 'synth/forget?people=6&forget=2', 'retain': 'synth/retain?people=6&forget=2', 'dtype': 'float32',"
            "'max_new_tokens': 16, 'metrics': ['probability']});"
            "print(json.dumps([it.probability for it in evaluate(cfg, log=lambda *_: None).tasks['forget'].items]))")
    cpu = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    env={**os.environ, "UNLEARN_CACHE": str(tmp / "cpu-cache")}).stdout.splitlines()[-1])
    d32 = max(abs(a - b) for a, b in zip(probs["cuda-fp32"], cpu))
    d16 = max(abs(a - b) for a, b in zip(probs["cuda-bf16"], cpu))
    print(f"max |P cuda fp32 - P cpu fp32| = {d32:.2e};  max |P cuda bf16 - P cpu fp32| = {d16:.2e}")
    if d32 > 1e-3:
        failures.append(f"CUDA fp32 probabilities differ from CPU by {d32}")
    if d16 > 5e-2:
        failures.append(f"CUDA bf16 probabilities differ from CPU by {d16}")
    print("FAILED: " + "; ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
