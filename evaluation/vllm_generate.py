"""Greedy generation through vLLM (the engine users serve with), offline, in its own process.

    python -m unlearnkit.evaluation.vllm_generate --model DIR --question "..." [--question ...] --out FILE

writes one JSON object to FILE: {"answers": [...], "token_ids": [[...], ...]}. vLLM spawns worker
processes, hence the __main__ guard; callers in Python use `generate_in_subprocess`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def generate(model: str, questions: list[str], max_tokens: int = 32, dtype: str = "auto") -> dict:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    from ..models.loading import resolve_model

    llm = LLM(model=resolve_model(model), dtype=dtype, max_model_len=512, seed=0, enforce_eager=True)
    messages = [[{"role": "user", "content": q}] for q in questions]
    outputs = llm.chat(messages, SamplingParams(temperature=0.0, max_tokens=max_tokens), use_tqdm=False)
    return {"answers": [o.outputs[0].text for o in outputs],
            "token_ids": [list(o.outputs[0].token_ids) for o in outputs]}


def generate_in_subprocess(model: str, questions: list[str], max_tokens: int = 32, dtype: str = "auto",
                           timeout: float = 600) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        cmd = [sys.executable, "-m", "unlearnkit.evaluation.vllm_generate", "--model", model,
               "--max-tokens", str(max_tokens), "--dtype", dtype, "--out", out]
        for q in questions:
            cmd += ["--question", q]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not os.path.isfile(out):
            raise RuntimeError(f"vLLM generation failed (exit {proc.returncode}): {(proc.stderr + proc.stdout)[-3000:]}")
        with open(out) as fh:
            return json.load(fh)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--question", action="append", required=True)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = generate(args.model, args.question, args.max_tokens, args.dtype)
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
