"""Greedy generation through vLLM (the engine users serve with), offline, in its own process.

    python -m unlearnkit.evaluation.vllm_generate --model DIR --requests IN.json --out OUT.json

IN.json:  {"prompt_token_ids": [[...], ...], "max_tokens": [..] or int, "dtype": "float32",
           "max_model_len": 1024, "logits_processors": ["module:Class", ...], "extra_args": [{..}, ..],
           "latency_requests": N, "groups": [n1, n2, ...] (consecutive prompts generated as separate batches)}
OUT.json: {"texts": [...], "token_ids": [[...], ...], "generate_s": wall seconds of the batch(es),
           "group_s": [wall seconds of each group],
           "latency_s": [seconds for each of the first N prompts sent alone]} in request order.

vLLM is kept apart from the caller in a child process; Python callers use `run_vllm`."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from ..data.formatting import prompt_text
from ..errors import UnlearnError
from ..files import write_json_atomic
from ..models.loading import load_tokenizer
from ..training.cache import resolve_model


class GenerationError(UnlearnError):
    """The generation engine failed; the message carries the end of its log."""


def whole_prefill(max_model_len: int, seeded: bool) -> dict:
    """Engine arguments that prefill every prompt in one step, for seeded requests on CPU: a seeded
    request whose prompt is prefilled in chunks kills vLLM's CPU engine (it rewinds the request's
    generator, which a CPU generator cannot do: "CPU Generator does not use offset"). Greedy batches keep
    vLLM's defaults."""
    from vllm.platforms import current_platform

    if not (seeded and current_platform.is_cpu()):
        return {}
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 2048)}


def generate(model: str, request: dict) -> dict:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    # the engine in this process, one worker in it: a separate engine-core process and a worker process
    # each import vLLM again, which took 26 s of a 32 s engine start on 2 cores, for the same tokens and speed
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    prompts = request["prompt_token_ids"]
    max_tokens = request.get("max_tokens", 128)
    max_tokens = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
    extra = request.get("extra_args") or [None] * len(prompts)
    temperature = request.get("temperature") or [0.0] * len(prompts)
    seed = request.get("seed") or [None] * len(prompts)
    max_model_len = request.get("max_model_len", 1024)
    llm = LLM(model=model, dtype=request.get("dtype", "auto"), max_model_len=max_model_len,
              seed=0, enforce_eager=True, logits_processors=request.get("logits_processors") or None,
              distributed_executor_backend="uni",
              **whole_prefill(max_model_len, seeded=any(s is not None for s in seed)))
    params = [SamplingParams(temperature=t, seed=s, max_tokens=m, extra_args=e)
              for m, e, t, s in zip(max_tokens, extra, temperature, seed)]
    outputs, group_s, start = [], [], 0
    for size in request.get("groups") or [len(prompts)]:   # batches generated (and timed) one after another
        started = time.perf_counter()
        outputs += llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts[start:start + size]],
                                params[start:start + size], use_tqdm=True)
        group_s.append(time.perf_counter() - started)
        start += size
    latency = []   # the first `latency_requests` prompts again, one at a time: seconds per request
    for p, sp in list(zip(prompts, params))[:int(request.get("latency_requests", 0))]:
        t0 = time.perf_counter()
        llm.generate([TokensPrompt(prompt_token_ids=p)], sp, use_tqdm=False)
        latency.append(time.perf_counter() - t0)
    return {"texts": [o.outputs[0].text for o in outputs],
            "token_ids": [list(o.outputs[0].token_ids) for o in outputs],
            "generate_s": sum(group_s), "group_s": group_s, "latency_s": latency}


def run_vllm(model: str, request: dict, timeout: float = 3600, echo: bool = False,
             env: Optional[dict] = None) -> dict:
    """Run `generate` in a child process (extra environment `env`); its progress bar goes to our
    stderr when `echo`."""
    with tempfile.TemporaryDirectory() as tmp:
        req, out = Path(tmp) / "request.json", Path(tmp) / "out.json"
        req.write_text(json.dumps(request))
        env = {"VLLM_LOGGING_LEVEL": "WARNING",
               # vLLM's CPU backend keeps one core for its front end by default: on a 2-core machine
               # that halves throughput for offline batch generation (measured 228 s -> 123 s)
               "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", **os.environ, **(env or {})}
        cmd = [sys.executable, "-m", "unlearnkit.evaluation.vllm_generate", "--model", model,
               "--requests", str(req), "--out", str(out)]
        log = Path(tmp) / "log.txt"
        with open(log, "wb") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.PIPE, env=env)
            try:
                while True:
                    chunk = proc.stderr.read1(4096) if hasattr(proc.stderr, "read1") else proc.stderr.read(4096)
                    if not chunk:
                        break
                    sink.write(chunk)
                    if echo:  # only vLLM's progress bar, not its log lines
                        bars = [s for s in re.split(rb"[\r\n]", chunk) if s.startswith(b"Processed prompts")]
                        if bars:
                            sys.stderr.buffer.write(b"\r" + bars[-1][:150])
                            sys.stderr.flush()
                proc.wait(timeout=timeout)
                if echo:
                    sys.stderr.write("\n")
            except BaseException:
                proc.kill()
                raise
        if proc.returncode != 0 or not out.is_file():
            tail = log.read_text(errors="replace")[-3000:]
            raise GenerationError(f"vLLM generation failed (exit {proc.returncode}):\n{tail}")
        return json.loads(out.read_text())


def generate_in_subprocess(model: str, questions: list[str], max_tokens: int = 32, dtype: str = "auto",
                           timeout: float = 600) -> dict:
    """Chat answers to plain questions: {"answers": [...], "token_ids": [...]}."""
    path = resolve_model(model)
    tok = load_tokenizer(path)
    ids = [tok(prompt_text(tok, q), add_special_tokens=False)["input_ids"] for q in questions]
    out = run_vllm(path, {"prompt_token_ids": ids, "max_tokens": max_tokens, "dtype": dtype,
                          "max_model_len": 512}, timeout=timeout)
    return {"answers": out["texts"], "token_ids": out["token_ids"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--requests", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = generate(args.model, json.loads(Path(args.requests).read_text()))
    write_json_atomic(args.out, result, indent=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
