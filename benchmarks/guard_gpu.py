"""The guard's decode-time work where vLLM serves on a GPU, measured without vLLM (the lent GPU
machines have none): both adapters driven by hand over CUDA logits, as the engine drives them.

* Model Runner V2 (`guard/vllm_v2.py`, vLLM's GPU default): a request state whose token buffers live
  on the GPU, as MRv2's do; each step commits one token per request on the device, then `apply`.
* V1 (`guard/vllm_v1.py` through `GuardSlots`): output tokens in host lists, logits on the GPU.

Half the rows are flagged (each on one of the policy's targets), half get the always-on names
check, as in benchmarks/guard_bench.py; the committed tokens spell a target's name now and then,
so the guards' match states move. For each adapter it prints the guard's time per step (the device
synchronised before and after) and how many times per step the host waits for the device
(`torch.cuda.set_sync_debug_mode`; each wait stalls vLLM's overlap of scheduling with the GPU), and
checks that the CUDA logits equal the same steps run on the CPU. For scale, a decode step of a
SmolLM2-135M-shaped model (random weights, bf16, Hugging Face eager) at the same batch.

    python benchmarks/guard_gpu.py --policy runs/guard/forget01-answers --tokenizer runs/tofu-mini/target
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import math
import statistics
import sys
import time
import types
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
WAITS: collections.Counter = collections.Counter()   # file:line of each wait counted
sys.path.insert(0, str(ROOT.parent))


def stub_vllm_v2_interface() -> None:
    """`guard/vllm_v2.py` subclasses MRv2's LogitsProcessor; where vLLM is not installed, a bare base class."""
    if importlib.util.find_spec("vllm") is not None:
        return
    names = ["vllm", "vllm.v1", "vllm.v1.worker", "vllm.v1.worker.gpu", "vllm.v1.worker.gpu.sample",
             "vllm.v1.worker.gpu.sample.logits_processor"]
    for name in names:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[names[-1]].LogitsProcessor = type("LogitsProcessor", (), {})


def runtime_with_decisions(policy: str, tokenizer: str, rows: int):
    """The policy's runtime, its classifier replaced by fixed decisions: row i is flagged on target i/2 when
    i is odd (no sentence embedder needed: it does not travel to the GPU machine)."""
    from transformers import AutoTokenizer

    from unlearnkit.guard.classifier import Decision
    from unlearnkit.guard.policy import load_policy
    from unlearnkit.guard.runtime import GuardRuntime

    tok = AutoTokenizer.from_pretrained(tokenizer)
    rt = GuardRuntime(load_policy(policy, tok), tok)
    n = len(rt.policy.targets)
    decisions = [Decision(True, math.nan, "fixed", *rt.classifier.expand({(i // 2) % n}, set())) if i % 2 else
                 Decision(False, 0.0, "fixed") for i in range(rows)]
    issued = iter(decisions * 2)        # the CPU run, then the CUDA run
    rt.decide = lambda prompts, args: [next(issued) for _ in prompts]
    return rt, tok


def token_streams(rt, tok, rows: int, steps: int) -> torch.Tensor:
    """[steps, rows] committed tokens: an answer that names its row's target (or another's) every few words."""
    names = [t["name"] for t in rt.policy.targets]
    out = []
    for i in range(rows):
        text = " ".join(f"The novelist {names[(i + k) % len(names)]} grew up by the sea and wrote of it."
                        for k in range(4))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        out.append([ids[(i + s) % len(ids)] for s in range(steps)])
    return torch.tensor(out).T.contiguous()


class DeviceState:
    """The fields of MRv2's LogitsProcRequestState the adapter reads, the buffers on `device`."""

    def __init__(self, rows: int, max_len: int, device):
        self.prompt_len = SimpleNamespace(np=np.zeros(rows, dtype=np.int32))
        self.prefill_len = SimpleNamespace(np=np.zeros(rows, dtype=np.int32))
        self.all_token_ids = SimpleNamespace(gpu=torch.zeros(rows, max_len, dtype=torch.int32, device=device))
        self.total_len = SimpleNamespace(gpu=torch.zeros(rows, dtype=torch.int32, device=device))

    def admit(self, slot: int, prompt: list[int]) -> None:
        self.prompt_len.np[slot] = self.prefill_len.np[slot] = len(prompt)
        self.all_token_ids.gpu[slot, :len(prompt)] = torch.tensor(prompt, dtype=torch.int32)
        self.total_len.gpu[slot] = len(prompt)

    def commit(self, tokens: torch.Tensor) -> None:
        """One token per slot, written on the device as the runner's post-sampling kernel does."""
        slots = torch.arange(len(tokens), device=tokens.device)
        self.all_token_ids.gpu[slots, self.total_len.gpu.long()] = tokens.to(torch.int32)
        self.total_len.gpu += 1


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(prepare, apply, device, steps: int) -> tuple[list[torch.Tensor], list[float], list[int]]:
    """`apply(prepare(s))` for each step s, only `apply` timed: (the logits on the host, ms per step, waits
    for the device per step)."""
    outputs, times, waits = [], [], []
    for s in range(steps):
        with warnings.catch_warnings(record=True):   # the benchmark's own waits are not counted
            logits = prepare(s)
            sync(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            logits = apply(logits)
            sync(device)
            times.append(1000 * (time.perf_counter() - t0))
        found = [f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]
        waits.append(len(found))
        WAITS.update(found)
        with warnings.catch_warnings(record=True):
            outputs.append(logits.cpu())
    return outputs, times, waits


def run_v2(rt, prompt: list[int], streams: torch.Tensor, base: torch.Tensor, device):
    from unlearnkit.guard.vllm_v2 import GuardProcessorV2

    steps, rows = streams.shape
    state = DeviceState(rows, len(prompt) + steps + 1, device)
    proc = GuardProcessorV2(None, state, runtime=rt)
    params = SimpleNamespace(extra_args=None, temperature=1.0)
    for slot in range(rows):
        proc.add_request(slot, params)
        state.admit(slot, prompt)
    proc.apply_staged_writes()
    order = np.random.default_rng(0).permutation(rows)      # rows in batch order, not slot order
    ctx = SimpleNamespace(idx_mapping_np=order, expanded_idx_mapping=torch.tensor(order, device=device),
                          expanded_local_pos=torch.zeros(rows, dtype=torch.long, device=device),
                          input_ids=torch.zeros(rows, dtype=torch.long, device=device))
    tokens, base = streams.to(device), base.to(device)

    def prepare(s):
        state.commit(tokens[s])
        return base[order].clone()
    return timed(prepare, lambda logits: proc.apply(logits, ctx), device, steps)


def run_v1(rt, prompt: list[int], streams: torch.Tensor, base: torch.Tensor, device):
    from unlearnkit.guard.decode import GuardSlots

    steps, rows = streams.shape
    slots, outputs = GuardSlots(), [[] for _ in range(rows)]
    for slot, guard in enumerate(rt.guards([(prompt, None)] * rows)):
        slots.add(slot, guard, outputs[slot])
    host, base = streams.tolist(), base.to(device)

    def prepare(s):
        for slot in range(rows):
            outputs[slot].append(host[s][slot])
        return base.clone()
    return timed(prepare, slots.apply, device, steps)


def model_step_ms(config_dir: str, rows: int, context: int, steps: int = 20) -> float:
    """A decode step of a model of `config_dir`'s shape (random weights, bf16) at `rows` requests of `context` tokens."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config_dir)).to("cuda", torch.bfloat16).eval()
    ids = torch.randint(0, model.config.vocab_size, (rows, context), device="cuda")
    times = []
    with torch.no_grad():
        out = model(ids, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        for _ in range(steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times[3:])


def compare(rt, tok, rows: int, steps: int, adapter) -> dict:
    """The adapter's steps on the CPU and on CUDA: timings, waits, and whether the logits agree."""
    prompt = tok("Tell me about the novelist, please.", add_special_tokens=False)["input_ids"]
    streams = token_streams(rt, tok, rows, steps)
    base = torch.randn(rows, rt.vocab_size, generator=torch.Generator().manual_seed(0))
    cpu_out, cpu_ms, _ = adapter(rt, prompt, streams, base, torch.device("cpu"))
    report = {"cpu_ms_median": statistics.median(cpu_ms[1:])}
    if torch.cuda.is_available():
        torch.cuda.set_sync_debug_mode("warn")
        WAITS.clear()
        gpu_out, gpu_ms, waits = adapter(rt, prompt, streams, base, torch.device("cuda"))
        torch.cuda.set_sync_debug_mode("default")
        report.update(cuda_ms_median=statistics.median(gpu_ms[1:]), cuda_ms_p90=float(np.percentile(gpu_ms[1:], 90)),
                      waits_per_step_median=statistics.median(waits[1:]), waits_first_step=waits[0],
                      equal_to_cpu=all(torch.equal(a, b) for a, b in zip(cpu_out, gpu_out)),
                      withheld_per_step=statistics.mean(int((o == float("-inf")).sum()) for o in gpu_out),
                      waits_where=dict(WAITS.most_common(6)))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default=str(ROOT / "runs" / "guard" / "forget01-answers"))
    parser.add_argument("--tokenizer", default=str(ROOT / "runs" / "tofu-mini" / "target"),
                        help="the policy's model (its tokenizer and config.json)")
    parser.add_argument("--rows", type=int, default=160)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--out", help="write the figures here as JSON")
    args = parser.parse_args()
    stub_vllm_v2_interface()
    torch.set_num_threads(1)   # the guard's writes are small: threads only add waits on a busy machine
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu only",
              "torch": torch.__version__, "rows": args.rows, "steps": args.steps}
    for name, adapter in (("v2", run_v2), ("v1", run_v1)):
        rt, tok = runtime_with_decisions(args.policy, args.tokenizer, args.rows)
        report[name] = compare(rt, tok, args.rows, args.steps, adapter)
        print(name, json.dumps(report[name]), flush=True)
    if torch.cuda.is_available():
        report["model_step_ms"] = model_step_ms(args.tokenizer, args.rows, context=128)
        print(f"SmolLM2-135M-shaped decode step, {args.rows} rows, HF eager bf16: {report['model_step_ms']:.2f} ms")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
