"""The one measuring path: any `System` (evaluation/systems.py) on benchmark tasks.

    requests   every generation prompt and teacher-forced continuation the config's metrics need
               (scoring.py `build_requests`, in task and item order)
    generate   one run of the system: the caller's extra batches (attack probes) first, then the metric
               prompts
    score      teacher forcing as the system assigns probabilities; None: `base`'s numbers (the engine
               behind a text rewriter), its generation fields replaced by this system's replies
    records    per-item records and per-task aggregates (scoring.py `task_results`)

`unlearn eval` (harness.py, cached), `unlearn compare` / `unlearn attack` (compare/measure.py) and the
quantization attack all measure through `measure`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from ..config import to_dict
from .benchmarks import Task
from .config import EvalConfig
from .results import EvalResult, GuardNotes, TaskResult
from .scoring import QA_GENERATION_KEYS, Requests, build_requests, qa_generation_fields, task_result, task_results
from .summary import privleak_auc
from .systems import Batch, Generated, System


@dataclass
class Measured:
    tasks: dict[str, TaskResult]
    timing: dict
    guard: Optional[GuardNotes]          # what the system notes of itself (the guard's flag rates)
    extra: list[Generated]               # the caller's extra batches, in order


def with_replies(tasks_out: dict[str, TaskResult], tasks: Sequence[Task], cfg: EvalConfig,
                 replies: dict) -> dict[str, TaskResult]:
    """`tasks_out` (the engine's measurement) with its qa/options generation fields replaced by `replies`
    (keyed (task, item, key)), aggregates recomputed; probability-based fields stay the engine's."""
    out = dict(tasks_out)
    for t, task in enumerate(tasks):
        if task.name not in out or task.kind not in ("qa", "options"):
            continue
        items = [dataclasses.replace(rec, **{f: v for key in QA_GENERATION_KEYS if (t, i, key) in replies
                                            for f, v in qa_generation_fields(r, key, replies[(t, i, key)]).items()})
                 for i, (rec, r) in enumerate(zip(out[task.name].items, task.items))]
        out[task.name] = task_result(task, items, cfg)
    return out


def _generate(system: System, req: Requests, extra: Sequence[Batch], log) -> tuple[list[Generated], dict, dict]:
    """(the extra batches' outputs, the metric replies keyed (task, item, key), timing: of the metric prompts'
    run, extra prompts included, when there are metric prompts)."""
    n_extra = sum(len(b.prompts) for b in extra)
    if not req.gen:
        if n_extra:
            log(f"generating {n_extra} extra prompts with {system.name}")
        return (system.generate(list(extra)) if extra else []), {}, {}
    t0 = time.time()
    log(f"generating {len(req.gen)} answers with {system.name}" + (f" after {n_extra} extra prompts" if extra else ""))
    out = system.generate([*extra, Batch([g.prompt for g in req.gen])])
    replies = {(g.task, g.item, g.key): text for g, text in zip(req.gen, out[-1].texts) if text is not None}
    return out[:-1], replies, {"generation_s": round(time.time() - t0, 2)}


def _scores_itself(system: System, cfg: EvalConfig) -> bool:
    """Whether the system assigns probabilities itself (asked with nothing to score: no model is loaded)."""
    return system.score([], cfg.token_budget) is not None


def _score(system: System, req: Requests, cfg: EvalConfig) -> tuple[dict, dict]:
    """(scores keyed (task, item) -> {key: Scored}, timing) of a system that scores itself."""
    from tqdm.auto import tqdm

    if not req.tf:
        return {}, {}
    t0 = time.time()
    with tqdm(total=len(req.tf), desc=f"teacher forcing ({system.name})", unit="item") as bar:
        scored = system.score(req.tf, cfg.token_budget, progress=bar.update)
    n_tokens = sum(len(r.prefix) + sum(map(len, r.continuations)) for r in req.tf)
    return ({(r.task, r.item): dict(zip(r.keys, s)) for r, s in zip(req.tf, scored)},
            {"teacher_forcing_s": round(time.time() - t0, 2), "teacher_forced_tokens_unshared": n_tokens})


def measure(system: System, tasks: list[Task], cfg: EvalConfig, tokenizer, extra: Sequence[Batch] = (),
            base: Optional[EvalResult] = None, log=print) -> Measured:
    """`system` on `tasks` with `cfg`'s metrics; `extra` batches generated in the same run, first; `base`: the
    engine's result, whose numbers stand where the system scores nothing (required then)."""
    started = time.time()
    scores_itself = _scores_itself(system, cfg)
    if not scores_itself and base is None:
        raise ValueError(f"{system.name} scores nothing itself: measuring it needs its engine's result (base)")
    req = build_requests(tasks, tokenizer, cfg)
    extra_out, replies, timing = _generate(system, req, extra, log)
    tf_timing: dict = {}
    if not scores_itself:
        out_tasks = with_replies(base.tasks, tasks, cfg, replies)
    else:
        scores, tf_timing = _score(system, req, cfg)
        gen_out: dict = {}
        for (t, i, k), text in replies.items():
            gen_out.setdefault((t, i), {})[k] = text
        out_tasks = task_results(tasks, gen_out, scores, cfg)
    timing = {**timing, **tf_timing, "measure_s": round(time.time() - started, 2)}
    return Measured(out_tasks, timing, system.notes(req.gen, tasks), extra_out)


def result_of(measured: Measured, cfg: EvalConfig, model: dict, versions: dict) -> EvalResult:
    """What an evaluation records (harness.py caches it): config, model, versions, timing, tasks, guard notes."""
    return EvalResult(cfg.benchmark, to_dict(cfg), model, versions, measured.timing, measured.tasks,
                      privleak_auc(measured.tasks), measured.guard)
