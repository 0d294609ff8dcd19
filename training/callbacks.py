"""Evaluation during training: every N optimizer steps a cheap teacher-forced metric on a few
forget (and retain) items, logged with the losses; the checkpoint best by it is kept.

    EVAL_METRICS          name -> EvalMetric(direction, needs_retain, value from the mean answer
                          probabilities), one declarative entry per metric
    is_better             pure comparison by mode (NaN is never better)
    EvalEverySteps        the TrainerCallback: measure, log, save the best atomically

The best checkpoint lives in `<output_dir>.partial/best-<step>/` while training; the pointer
`best.json` is replaced atomically after the new directory is complete, and only then is the
previous one deleted, so a reader (or a resume) always finds a whole best checkpoint. The
finished run holds it as `<output_dir>/best/` (LoRA runs: merged, like the final weights).
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from ..files import write_json_atomic

BEST_POINTER = "best.json"


@dataclass(frozen=True)
class EvalMetric:
    mode: str              # the direction that is better: "max" or "min"
    needs_retain: bool
    value: Callable[[float, float | None], float]   # (mean forget prob, mean retain prob) -> metric


EVAL_METRICS = {
    # TOFU's answer probability (length-normalised, teacher forced) on the first N forget items
    "forget_prob": EvalMetric("min", False, lambda forget, retain: forget),
    # the same on the first N retain items
    "retain_prob": EvalMetric("max", True, lambda forget, retain: retain),
    # retain over forget probability: high when the retain answers are kept and the forget ones lost
    "retain_over_forget": EvalMetric("max", True, lambda forget, retain: retain / max(forget, 1e-12)),
}


def is_better(value: float, best: float | None, mode: str) -> bool:
    if value != value:  # NaN
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


class EvalEverySteps(TrainerCallback):
    """Every `cfg.every_steps` steps (main process only): the metric into the log history as
    `eval_<metric>`; with keep_best, a better value saves the model into `work/best-<step>`."""

    def __init__(self, cfg, tokenizer, forget, retain, work: Path, max_length: int, log=print):
        self.cfg, self.tokenizer, self.work, self.max_length, self.log = cfg, tokenizer, Path(work), max_length, log
        self.forget = forget[: cfg.examples]
        self.retain = retain[: cfg.examples] if retain else None
        self.metric = EVAL_METRICS[cfg.metric]
        self.best = read_best(self.work)  # a resumed run keeps the best so far

    def measure(self, model) -> float:
        from .probability import answer_probabilities, mean

        was_training = model.training
        model.eval()
        try:
            forget = mean(answer_probabilities(model, self.tokenizer, self.forget, self.max_length))
            retain = (mean(answer_probabilities(model, self.tokenizer, self.retain, self.max_length))
                      if self.metric.needs_retain else None)
        finally:
            model.train(was_training)
        return float(self.metric.value(forget, retain))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.cfg.every_steps or not state.is_world_process_zero:
            return control
        value = self.measure(model)
        state.log_history.append({"step": state.global_step, f"eval_{self.cfg.metric}": value})
        best_value = self.best["value"] if self.best else None
        if self.cfg.keep_best and is_better(value, best_value, self.cfg.mode):
            self.best = save_best(model, self.tokenizer, self.work, state.global_step, self.cfg.metric,
                                  self.cfg.mode, value)
            self.log(f"eval step {state.global_step}: {self.cfg.metric} = {value:.4g} (best so far, saved)")
        else:
            self.log(f"eval step {state.global_step}: {self.cfg.metric} = {value:.4g}")
        return control


def read_best(work: Path) -> dict | None:
    pointer = Path(work) / BEST_POINTER
    if not pointer.is_file():
        return None
    best = json.loads(pointer.read_text())
    return best if (Path(work) / best["dir"]).is_dir() else None


def save_best(model, tokenizer, work: Path, step: int, metric: str, mode: str, value: float) -> dict:
    """Write the model (merged, for a PEFT model) into `work/best-<step>`, then point `best.json`
    at it, then delete the previous best: each step leaves a complete best checkpoint."""
    work = Path(work)
    previous = read_best(work)
    target = work / f"best-{step}"
    if target.exists():
        shutil.rmtree(target)
    export = copy.deepcopy(model).merge_and_unload() if hasattr(model, "merge_and_unload") else model
    export.save_pretrained(target)
    tokenizer.save_pretrained(target)
    best = {"dir": target.name, "step": step, "metric": metric, "mode": mode, "value": value}
    write_json_atomic(target / BEST_POINTER, best)
    write_json_atomic(work / BEST_POINTER, best)
    if previous and previous["dir"] != target.name:
        shutil.rmtree(work / previous["dir"], ignore_errors=True)
    return best


def eval_summary(cfg, work: Path, log_history: list[dict]) -> dict:
    """run.json's `eval`: the setting, every measured value and the best checkpoint kept."""
    key = f"eval_{cfg.metric}"
    best = read_best(work) if cfg.keep_best else None
    return {"metric": cfg.metric, "mode": cfg.mode, "every_steps": cfg.every_steps, "examples": cfg.examples,
            "history": [[entry["step"], entry[key]] for entry in log_history if key in entry],
            "best": {"step": best["step"], "value": best["value"], "path": "best"} if best else None}
