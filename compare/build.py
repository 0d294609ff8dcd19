"""Building (or reusing) what a system is made of: its checkpoint and its guard policy.

Checkpoints come from the training cache (`training.run.train_cached`: a run is reused when its
config hash matches, resumed when interrupted). Guard policies are compiled once per (forget set,
calibration set, guard config, tokenizer and weights) into `$UNLEARN_CACHE/guards/<hash>`,
written to a temporary directory and renamed, so an interruption never leaves half a policy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from ..files import json_digest, write_json_atomic
from .config import CompareConfig, GuardSpec, System

BUILD_RECORD = "build.json"


def ensure_model(ref: str, log=print) -> str:
    """A model ref as a local directory; `run:CONFIG.yaml` is trained (cached) first, and so is
    whatever `run:` model that config starts from."""
    from ..config import load_config
    from ..training.cache import resolve_model
    from ..training.config import TrainConfig
    from ..training.run import train_cached

    if not ref.startswith("run:"):
        return resolve_model(ref)
    config = ref[4:]
    base = load_config(TrainConfig, config).model
    if base.startswith("run:"):
        ensure_model(base, log)
    return str(train_cached(config, log=log))


def checkpoint(system: System, cfg: CompareConfig, log=print) -> str:
    """The local directory of the system's weights (trained on first use)."""
    if system.base == "target":
        return ensure_model(cfg.target, log)
    if system.base == "retain":
        return ensure_model(cfg.retain, log)
    return ensure_model("run:" + cfg.methods[system.base], log)


def run_record(path: str) -> dict:
    """What training this checkpoint cost (its run.json), or {} for a model we did not train."""
    f = Path(path) / "run.json"
    if not f.is_file():
        return {}
    run = json.loads(f.read_text())
    keys = ("method", "mode", "init", "train_seconds", "peak_memory_mb", "trainable_fraction", "steps", "epochs")
    return {k: run[k] for k in keys if k in run}


def guard_policy(spec: GuardSpec, model_path: str, log=print) -> tuple[str, dict]:
    """(policy dir, {'build_seconds': ...}) for the guard of `spec` compiled for `model_path`. `spec.forget`
    is QA pairs (a data spec), a corpus (guard/corpus.py: the quote filter, with the knowledge guard of its
    passages in corpus_mode forget) or subjects (guard/subjects.py: names, no answers); bad input is refused
    here, naming the file and line."""
    from ..config import load_config, to_dict
    from ..data.sources import load_spec
    from ..evaluation.systems import model_fingerprint
    from ..evaluation.calibration import RatioProbe, build_policy
    from ..guard.build import build_corpus_policy
    from ..guard.calibrate import FIT_VERSION
    from ..guard.corpus import ITEMS_VERSION, is_corpus_spec, read_corpus
    from ..guard.policy import GuardConfig
    from ..guard.subjects import is_subjects_spec, load_subjects
    from ..models.catalog import cache_root
    from ..models.loading import load_tokenizer

    gcfg = load_config(GuardConfig, spec.config, list(spec.set))
    forget, subjects = [], None
    if is_corpus_spec(spec.forget):       # the key: each document's text (the QA keys below are unchanged)
        key = {"corpus": spec.forget, "documents": [hashlib.sha256(d.text.encode()).hexdigest()
                                                    for d in read_corpus(spec.forget)]}
        if gcfg.corpus == "forget":      # a policy of whole passages, or without numbers' first digits, is not reused
            key.update(items=ITEMS_VERSION, number_heads=gcfg.number_heads is not False)
    elif is_subjects_spec(spec.forget):
        subjects = load_subjects(spec.forget)
        key = {"subjects": [to_dict(s) for s in subjects]}
    else:
        forget = load_spec(spec.forget)
        key = [r.to_json() for r in forget]
    retain = load_spec(spec.retain) if spec.retain else None
    out = cache_root() / "guards" / json_digest({"config": to_dict(gcfg), "forget": key,
                                                 "retain": [r.question for r in retain or []],
                                                 "model": model_fingerprint(model_path),
                                                 # calibrated: a policy fitted by an older fit is not reused
                                                 **({"fit": FIT_VERSION} if gcfg.calibrated else {})})
    record = out / BUILD_RECORD
    if record.is_file():
        log(f"(cached) guard policy {out}")
        return str(out), json.loads(record.read_text())
    tmp = out.with_name(out.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.time()
    sources = {"forget": spec.forget, "retain": spec.retain, "model": model_path}
    if is_corpus_spec(spec.forget):
        build_corpus_policy(spec.forget, tmp, model_path, load_tokenizer(model_path), gcfg, retain=retain,
                            sources=sources, progress=log, probe=RatioProbe)
    else:
        build_policy(forget, tmp, model_path, load_tokenizer(model_path), gcfg, retain=retain, sources=sources,
                     progress=log, subjects=subjects)
    info = {"build_seconds": round(time.time() - started, 2)}
    write_json_atomic(tmp / BUILD_RECORD, info)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return str(out), info
