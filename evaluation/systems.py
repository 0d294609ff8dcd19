"""What is measured: one `System` interface for plain weights, weights behind the guard, the agent front
(compare/systems.py) and whatever runtime method comes next.

    fingerprint()                what determines its outputs (a cache key part)
    generate(batches)            greedy answers to every batch of prompts, in one engine run; a batch is timed
                                 apart and its first `latency` prompts are sent again one at a time (the
                                 serving figures); a None text: the system does not answer that kind of prompt
                                 (a raw-text completion for a chat front) and the engine's answer stands
    score(requests, budget)      teacher-forced log-probabilities of continuations as this system assigns
                                 them; None where the paradigm cannot move probabilities (a text rewriter):
                                 the engine's numbers stand
    notes(requests, tasks)       what it records of itself: a guarded system its guard's flag rates
                                 (results.py GuardNotes), others None

`evaluation/measure.py` `measure(system, tasks, ...)` is the one measuring path over them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Optional, Protocol, Sequence

from ..errors import ModelError
from ..models.checkpoint import model_fingerprint
from ..models.loading import greedy_generate, load_model
from .generation import default_dtype, generate_vllm_timed, sample_generate
from .results import GuardNotes
from .scoring import GenRequest, Prompt, ScoreRequest


@dataclass(frozen=True)
class Batch:
    prompts: Sequence[Prompt]
    latency: int = 0          # then its first `latency` prompts again, one at a time


@dataclass
class Generated:
    texts: list[Optional[str]]
    tokens: list[int]                 # output tokens per reply (0 where none)
    seconds: float                    # the batch's wall time
    latency_s: list[float] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)   # per reply, what the system says about it (agent routes)


class System(Protocol):
    name: str

    def fingerprint(self) -> str: ...

    def generate(self, batches: Sequence[Batch]) -> list[Generated]: ...

    def score(self, requests: Sequence[ScoreRequest], token_budget: int, progress=None) -> Optional[list]: ...

    def notes(self, requests: Sequence[GenRequest], tasks: Sequence) -> Optional[GuardNotes]: ...


# ----------------------------------------------------------------------------- fingerprints
def policy_identity(meta: dict) -> list:
    """What identifies a guard policy in a cache key (its policy.json): the checksums of all its files,
    its config and its calibration, and the titles its targets are named by where it has any (they live
    in policy.json only; a policy without titles keeps the key it had before titles existed). Evaluations
    key on it as sorted JSON, compare's stages on its digest (compare/measure.py `policy_fingerprint`)."""
    identity = [meta["files"], meta["config"], meta["calibration"]]
    titles = [target.get("titles") or [] for target in meta.get("targets") or []]
    return identity + [{"titles": titles}] if any(titles) else identity


# ----------------------------------------------------------------------------- engines
def torch_dtype(name: str):
    import torch

    return getattr(torch, default_dtype(name))


def device() -> Optional[str]:
    import torch

    return "cuda" if torch.cuda.is_available() else None


def _check_latency(batches: Sequence[Batch]) -> None:
    if any(b.latency for b in batches[1:]):
        raise ValueError("vLLM: only the first batch of a generation run can time prompts one at a time")


class Weights:
    """A checkpoint generating through vLLM (as served) or transformers, scored by teacher forcing."""

    def __init__(self, path: str, tokenizer, engine: str = "vllm", dtype: str = "auto", name: str = "weights"):
        self.path, self.tokenizer, self.engine, self.dtype, self.name = path, tokenizer, engine, dtype, name
        self._model = None

    @cached_property
    def weights_fingerprint(self) -> str:
        return model_fingerprint(self.path)

    def fingerprint(self) -> str:
        return self.weights_fingerprint

    def model(self):
        """The transformers model, loaded once (generation with engine transformers, and teacher forcing)."""
        if self._model is None:
            self._model, _ = load_model(self.path, dtype=torch_dtype(self.dtype), device=device())
        return self._model

    def close(self) -> None:
        self._model = None

    def generate(self, batches: Sequence[Batch]) -> list[Generated]:
        """One output per batch (an empty one for an empty batch)."""
        full = [b for b in batches if b.prompts]
        got = iter((self._vllm(full) if self.engine == "vllm" else [self._transformers(b) for b in full]) if full else [])
        return [next(got) if b.prompts else Generated([], [], 0.0) for b in batches]

    def _vllm_guard(self) -> Optional[str]:
        return None

    def _vllm(self, batches: Sequence[Batch]) -> list[Generated]:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ModelError("engine vllm: vLLM is not installed here; install it (make setup) or use engine=transformers")
        _check_latency(batches)
        prompts = [p for b in batches for p in b.prompts]
        out = generate_vllm_timed(self.path, [p.ids for p in prompts], [p.budget for p in prompts], dtype=self.dtype,
                                  guard=self._vllm_guard(), latency_requests=batches[0].latency,
                                  groups=[len(b.prompts) for b in batches],
                                  sampling=[(p.temperature, p.seed) for p in prompts])
        got, start = [], 0
        for n, b in enumerate(batches):
            end = start + len(b.prompts)
            got.append(Generated(out["texts"][start:end], [len(t) for t in out["token_ids"][start:end]],
                                 out["group_s"][n], out["latency_s"] if n == 0 else []))
            start = end
        return got

    def _transformers(self, batch: Batch) -> Generated:
        from tqdm.auto import tqdm

        ids, budgets = [p.ids for p in batch.prompts], [p.budget for p in batch.prompts]
        started = time.perf_counter()
        sampled = any(p.temperature for p in batch.prompts)
        with tqdm(total=len(ids), desc="generate", unit="prompt") as bar:
            texts = (sample_generate(self.model(), self.tokenizer, ids, budgets, [p.temperature for p in batch.prompts],
                                     [p.seed for p in batch.prompts], progress=bar.update) if sampled else
                     greedy_generate(self.model(), self.tokenizer, ids, budgets, progress=bar.update))
        seconds = time.perf_counter() - started
        latency = []
        for i, b in zip(ids[:batch.latency], budgets):
            t0 = time.perf_counter()
            greedy_generate(self.model(), self.tokenizer, [i], [b])
            latency.append(time.perf_counter() - t0)
        tokens = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        return Generated(texts, tokens, seconds, latency)

    def _transform(self, requests: Sequence[ScoreRequest]):
        return None

    def score(self, requests: Sequence[ScoreRequest], token_budget: int, progress=None) -> Optional[list]:
        from .teacher_forcing import score_continuations

        if not requests:
            return []
        return score_continuations(self.model(), [r.prefix for r in requests], [r.continuations for r in requests],
                                   token_budget=token_budget, transform_logits=self._transform(requests),
                                   progress=progress)

    def notes(self, requests: Sequence[GenRequest], tasks: Sequence) -> Optional[GuardNotes]:
        return None


class Guarded(Weights):
    """The checkpoint behind the token-filter guard: vLLM with the guard as its logits processor (as
    `unlearn serve --guard`), teacher forcing through the same mask and penalty (guard/scoring.py)."""

    def __init__(self, path: str, tokenizer, policy_dir: str, dtype: str = "auto", name: str = "guarded"):
        super().__init__(path, tokenizer, "vllm", dtype, name)
        self.policy_dir = policy_dir

    @cached_property
    def policy(self):
        """Loaded and checked whole once, on first use (the fingerprint: before any generation); a run that
        only generates leaves it to the engine."""
        from ..guard.policy import load_policy

        return load_policy(self.policy_dir, self.tokenizer)

    def runtime(self):
        """A fresh runtime (its caches cold: the flag rates' classification time is measured as the engine's)."""
        from ..guard.runtime import GuardRuntime

        return GuardRuntime(self.policy, self.tokenizer)

    def fingerprint(self) -> str:
        # the weights plus everything in the policy (all its files are checksummed)
        return self.weights_fingerprint + json.dumps(policy_identity(self.policy.meta), sort_keys=True)

    def _vllm_guard(self) -> Optional[str]:
        return self.policy_dir

    def _transform(self, requests: Sequence[ScoreRequest]):
        """Each item's prompt classified as the engine would; its scored positions get that request's mask
        and penalty."""
        from functools import partial

        from ..guard.scoring import guarded_logits

        return partial(guarded_logits, self.runtime().guards([(r.prefix, None) for r in requests]))

    def notes(self, requests: Sequence[GenRequest], tasks: Sequence) -> GuardNotes:
        """Which generation prompts the guard flags, per set (its false-positive rate on retain sets), from
        the same classifier on the same prompt ids as the engine's processor."""
        from ..guard.runtime import RequestArgs

        prompts = [g.prompt.ids for g in requests]
        t0 = time.perf_counter()
        decisions = self.runtime().decide(prompts, [RequestArgs()] * len(prompts))
        seconds = time.perf_counter() - t0
        flagged: dict = {}
        for g, d in zip(requests, decisions):
            flagged.setdefault(f"{tasks[g.task].name}/{g.key}", []).append(bool(d.flagged))
        return GuardNotes(str(Path(self.policy_dir).resolve()), self.policy.meta["calibration"],
                          {k: round(sum(v) / len(v), 4) for k, v in flagged.items()},
                          {k: sum(v) for k, v in flagged.items()}, {k: len(v) for k, v in flagged.items()},
                          round(1000 * seconds / max(1, len(prompts)), 3))


class Replayed:
    """A system answering from replies recorded earlier (a cache), prompt by prompt in order: measuring
    again after a change of scoring rules costs no engine time. It scores nothing (the engine's numbers)."""

    def __init__(self, texts: Sequence[Optional[str]], name: str = "replayed"):
        self.texts, self.name = list(texts), name

    def fingerprint(self) -> str:
        return json.dumps(self.texts)

    def generate(self, batches: Sequence[Batch]) -> list[Generated]:
        n = sum(len(b.prompts) for b in batches)
        if n != len(self.texts):
            raise ValueError(f"{len(self.texts)} recorded replies for {n} prompts")
        out, start = [], 0
        for b in batches:
            texts = self.texts[start:start + len(b.prompts)]
            out.append(Generated(texts, [0] * len(texts), 0.0))
            start += len(b.prompts)
        return out

    def score(self, requests: Sequence[ScoreRequest], token_budget: int, progress=None) -> Optional[list]:
        return None

    def notes(self, requests: Sequence[GenRequest], tasks: Sequence) -> Optional[GuardNotes]:
        return None


def engine_system(cfg, tokenizer, path: str) -> Weights:
    """The system an evaluation config describes: `path`'s weights, behind `cfg.guard` when set."""
    name = Path(path).name or str(path)
    if cfg.guard:
        return Guarded(path, tokenizer, cfg.guard, cfg.dtype, name=f"{name} + guard")
    return Weights(path, tokenizer, cfg.engine, cfg.dtype, name=name)
