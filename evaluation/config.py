"""The typed evaluation config (`unlearn eval --config ...` or flags); see configs/eval/*.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..errors import ConfigError

# metric name -> what it is; `metrics:` in a config picks a subset (default: every one that applies)
METRICS = {
    "probability": "length-normalised answer probability (option-normalised for real authors / world facts)",
    "rouge": "ROUGE-1/ROUGE-L recall (TOFU) and ROUGE-L F1 (MUSE) of greedy generations",
    "truth_ratio": "P(perturbed)/P(paraphrased) per item; TOFU's truth-ratio score per set",
    "memorization": "exact memorisation and extraction strength of the gold answer (teacher forced)",
    "forget_quality": "KS-test p-value of forget-set truth ratios against the retain model's",
    "model_utility": "harmonic mean of {probability, ROUGE-L recall, truth ratio} x {retain, real authors, world facts}",
    "privleak": "Min-K% membership-inference AUC (forget vs holdout) and PrivLeak relative to the retain model; "
                "the same per attack: LOSS, ZLib, Min-K%, Min-K%++, reference (metrics/mia.py)",
}
GENERATION_METRICS = {"rouge"}
REQUIRES = {"model_utility": {"probability", "rouge", "truth_ratio"}, "forget_quality": {"truth_ratio"}}


def expand_metrics(metrics: list[str]) -> set[str]:
    """The selected metrics plus those they are computed from."""
    out = set(metrics)
    for m in metrics:
        out |= REQUIRES.get(m, set())
    return out


@dataclass
class EvalConfig:
    model: str = "smollm2"
    benchmark: str = "tofu-mini"
    forget_split: str = "forget01"        # benchmark tofu
    forget: Optional[str] = None          # benchmarks files / synthetic: data specs
    retain: Optional[str] = None
    muse_dir: Optional[str] = None        # benchmark muse
    max_items: Optional[int] = None       # per task, the first N (TOFU's ds_size)
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    retain_eval: Optional[str] = None     # eval JSON | TOFU log dir | model:<ref> (evaluated, cached)
    engine: Literal["vllm", "transformers"] = "vllm"   # generation engine
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    max_new_tokens: int = 128             # QA answers (TOFU); MUSE uses 128 (verbmem) and 32 (knowmem)
    max_length: int = 512                 # teacher forcing: tokens per scored sequence
    token_budget: int = 3072              # teacher forcing: tokens per forward batch
    min_k: float = 0.4                    # Min-K% fraction (MUSE reports Min-40%)
    guard: Optional[str] = None           # guard policy dir: generate through the guard, as deployed

    def validate(self):
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ConfigError(f"metrics: unknown metric(s) {unknown}; valid metrics: {sorted(METRICS)}")
        if not self.metrics:
            raise ConfigError(f"metrics: empty; valid metrics: {sorted(METRICS)}")
        for name in ("max_new_tokens", "max_length", "token_budget"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_items is not None and self.max_items < 1:
            raise ConfigError(f"max_items must be >= 1, got {self.max_items}")
        if self.guard is not None:
            if self.engine != "vllm":
                raise ConfigError("guard: a guard runs inside vLLM; use engine=vllm")
        if not 0 < self.min_k <= 1:
            raise ConfigError(f"min_k must be in (0, 1], got {self.min_k}")
