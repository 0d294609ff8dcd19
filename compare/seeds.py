"""Training seeds: the spread of a weight-level method over seeds, beside the bootstrap spread over items.

With `seeds: [s1, s2, ...]` in a comparison config, every weight-level system (a method alone, no
runtime part) is also trained with `optim.seed = s` for each listed seed (a cached run of its own)
and its metrics measured the same way (the eval config, no attacks). The report gives, per system,
forget quality and model utility over its own run plus these: mean, sample standard deviation,
range. Statistics pass (train + measure each seed) apart from the maths (`spread`). A seed that fails
is kept as a run with its reason and no numbers: the spread is over the seeds that were measured.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..config import load_config
from ..errors import one_line
from ..evaluation.config import EvalConfig
from ..evaluation.results import EvalResult, Summary
from ..evaluation.summary import Reference, summarize
from .build import run_record
from .config import CompareConfig, System


@dataclass(frozen=True)
class SeedRun:
    """One training seed of a method: where it was written, what it cost, its headline numbers (or why
    it has none)."""
    seed: int
    checkpoint: str
    train_seconds: Optional[float]
    forget_quality: Optional[float]
    model_utility: Optional[float]
    error: Optional[str] = None

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: Any) -> Optional["SeedRun"]:
        """None for anything but an object with an integer seed (the report then leaves it out)."""
        if not isinstance(d, dict) or not isinstance(d.get("seed"), int):
            return None
        return cls(d["seed"], str(d.get("checkpoint") or ""), d.get("train_seconds"), d.get("forget_quality"),
                   d.get("model_utility"), d.get("error"))


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation (None below two values) and range of one metric over seeds."""
    n: int
    mean: float
    sd: Optional[float]
    low: float
    high: float


def spread(values: Sequence[Optional[float]]) -> Optional[Spread]:
    """The spread of the measured values (None ones are not counted); None when nothing was measured."""
    got = [float(v) for v in values if v is not None]
    if not got:
        return None
    return Spread(len(got), statistics.fmean(got), statistics.stdev(got) if len(got) > 1 else None,
                  min(got), max(got))


def config_seed(config_path: str) -> int:
    """The seed a method's training config trains with (`optim.seed`)."""
    from ..training.config import TrainConfig   # heavy: the method registry imports torch

    return load_config(TrainConfig, config_path).optim.seed


def train_seed(config_path: str, seed: int, log=print) -> str:
    """The method's config trained with `optim.seed = seed` (cached like any run)."""
    from ..training.run import train_cached

    return str(train_cached(config_path, [f"optim.seed={seed}"], log=log))


def measure_seed(ecfg: EvalConfig, path: str, log=print) -> EvalResult:
    from .measure import engine_metrics

    return engine_metrics(ecfg, path, None, log=log)


def _train_seconds(path: str) -> Optional[float]:
    return run_record(path).get("train_seconds")


def seed_runs(system: System, cfg: CompareConfig, ecfg: EvalConfig, sum_cfg: EvalConfig, ref: Optional[Reference],
              log=print) -> list[SeedRun]:
    """The system's method trained and measured with each of `cfg.seeds` other than its config's own:
    measured with `ecfg` and summarised with `sum_cfg` against `ref`, as compare does its own run."""
    config = cfg.methods[system.base]
    own = config_seed(config)
    return [_seed_run(system.name, config, seed, ecfg, sum_cfg, ref, log) for seed in cfg.seeds if seed != own]


def _seed_run(name: str, config: str, seed: int, ecfg: EvalConfig, sum_cfg: EvalConfig, ref: Optional[Reference],
              log) -> SeedRun:
    log(f"-- {name}: seed {seed}")
    try:
        path = train_seed(config, seed, log=log)
        summary = summarize(measure_seed(ecfg, path, log=log), sum_cfg, ref)
    except Exception as exc:  # noqa: BLE001 - one seed's failure is reported with it, the others still count
        log(f"!! {name}: seed {seed} failed: {one_line(exc)}")
        return SeedRun(seed, "", None, None, None, one_line(exc))
    return SeedRun(seed, path, _train_seconds(path), _forget_quality(summary), _utility(summary))


def own_run(res: dict, seed: int) -> SeedRun:
    """The system's own measured run (the config's seed) as one seed of the spread."""
    summary: Summary = res["summary"]
    return SeedRun(seed, res.get("checkpoint") or "", (res.get("training") or {}).get("train_seconds"),
                   _forget_quality(summary), _utility(summary))


def _forget_quality(s: Summary) -> Optional[float]:
    return s.forget.value if s.forget else None


def _utility(s: Summary) -> Optional[float]:
    return s.utility.value if s.utility else None
