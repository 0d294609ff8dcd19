"""The measuring half of the guard's calibrated mode (guard/calibrate.py holds the fit's maths and
checks): truth ratios of forget items teacher-forced through a guard, with prompts and continuations
built exactly as `unlearn eval` builds them, and `build_policy`, guard/build.py's build with this
probe, which `unlearn guard build` and `unlearn compare` call.

    RatioProbe        ratios(s): one teacher-forced pass at soft mask s; statistics(): one pass
                      (calibrate.TokenStats per scored token) from which ratios_at(s) follows for
                      every s by arithmetic
    build_policy      guard.build.build_policy with probe=RatioProbe (needed for mode: calibrated;
                      the same as guard.build.build_policy for a strict policy)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..data.records import QA
from ..guard import build as guard_build
from ..guard.calibrate import TokenStats
from ..guard.runtime import GuardRuntime
from ..guard.scoring import guarded_logits
from .benchmarks import Task
from .config import EvalConfig
from .metrics import tofu as TOFU
from .scoring import build_requests
from .teacher_forcing import score_continuations


class RatioProbe:
    """Truth ratios of `items` under the guard: prompts and continuations built once, exactly as
    `unlearn eval` builds them. `ratios(s)` is one teacher-forced pass at soft mask s;
    `statistics()` one pass from which `ratios_at(s)` follows for every s by arithmetic."""

    def __init__(self, model, tokenizer, runtime: GuardRuntime, items: Sequence[QA]):
        self.model, self.runtime = model, runtime
        task = Task("calibration", "qa", list(items), "calibration", "forget")
        self.requests = build_requests([task], tokenizer, EvalConfig(metrics=["truth_ratio"])).tf
        self._stats: dict[bool, list[dict[str, TokenStats]]] = {}

    def _guards(self, soft_mask: float | None, penalty: bool = False):
        self.runtime.soft_mask, self.runtime.calibrated_penalty = soft_mask, penalty
        return self.runtime.guards([(r.prefix, None) for r in self.requests])

    def _score(self, transform) -> list[dict]:
        scored = score_continuations(self.model, [r.prefix for r in self.requests], [r.continuations for r in self.requests],
                                     transform_logits=transform)
        return [dict(zip(r.keys, s)) for r, s in zip(self.requests, scored)]

    def ratios(self, soft_mask: float | None, guarded: bool = True, penalty: bool = False) -> list[float]:
        """None: strict (withheld); guarded=False: the model alone; penalty: the policy's semantic penalty too."""
        transform = None
        if guarded:
            guards = self._guards(soft_mask, penalty)
            transform = lambda logits, owner, contexts: guarded_logits(guards, logits, owner, contexts)  # noqa: E731
        return [_truth_ratio({k: -s.avg_loss for k, s in by.items()}) for by in self._score(transform)]

    def statistics(self, penalty: bool = False) -> list[dict[str, TokenStats]]:
        if penalty not in self._stats:
            self._stats[penalty] = self._record(penalty)
        return self._stats[penalty]

    def ratios_at(self, soft_mask: float, penalty: bool = False) -> list[float]:
        return [_truth_ratio({k: float(t.logp(soft_mask).mean()) for k, t in by.items()})
                for by in self.statistics(penalty)]

    def _record(self, penalty: bool) -> list[dict[str, TokenStats]]:
        guards = self._guards(0.0, penalty)
        # rows reach the transform item by item, continuation by continuation, token by token
        targets = [[tok for cont in r.continuations for tok in cont] for r in self.requests]
        cursor = [0] * len(targets)
        rows: list[list[tuple[float, float, bool]]] = [[] for _ in targets]

        def transform(logits, owner, contexts):
            out = guarded_logits(guards, logits, owner, contexts)
            for n, item in enumerate(owner.tolist()):
                target = targets[item][cursor[item]]
                cursor[item] += 1
                rows[item].append(_split(out[n], guards[item], contexts[n], target))
            return out

        scored = self._score(transform)
        stats = []
        for by, r, recorded in zip(scored, self.requests, rows):
            per, k = {}, 0
            for key, s in by.items():
                other, matched, hit = (np.array(v) for v in zip(*recorded[k:k + s.n_tokens]))
                per[key] = TokenStats(np.array(s.logprobs), other, matched, hit.astype(float))
                k += s.n_tokens
            stats.append(per)
        return stats


def _split(row, guard, context, target: int) -> tuple[float, float, bool]:
    """(log-sum-exp over the row's unmatched tokens, over its matched ones, whether `target` is matched)."""
    import torch

    if guard is None:
        return float(torch.logsumexp(row, -1)), -math.inf, False
    index = torch.cat(guard.policy_matches(row.device, context)).unique()
    if guard.withheld is not None:   # a name the prompt did not write stays withheld at every mask
        index = index[~torch.isin(index, torch.cat(guard.withheld.indexes(row.device, context)))]
    index = index[index < row.shape[-1]]
    if not index.numel():
        return float(torch.logsumexp(row, -1)), -math.inf, False
    matched = float(torch.logsumexp(row[index], -1))
    rest = row.clone()
    rest[index] = -math.inf
    return float(torch.logsumexp(rest, -1)), matched, bool((index == target).any())


def _truth_ratio(mean_logp: dict[str, float]) -> float:
    perturbed = [-v for k, v in mean_logp.items() if k.startswith("perturbed")]
    return TOFU.truth_ratio(-mean_logp["paraphrased"], perturbed)


def build_policy(*args, **kwargs) -> dict:
    """guard/build.py `build_policy` with this module's `RatioProbe` for calibrated mode's fit."""
    return guard_build.build_policy(*args, probe=RatioProbe, **kwargs)
