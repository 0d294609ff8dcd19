"""From benchmark tasks to engine requests, and from engine outputs to per-item records and
per-task aggregates (the numbers themselves come from the pure functions in metrics/)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from ..data.formatting import end_of_turn, prompt_text
from .benchmarks import Task
from .config import GENERATION_METRICS, EvalConfig, expand_metrics
from .metrics import memorization as MEM
from .metrics import tofu as TOFU
from .metrics.means import finite_mean
from .metrics.rouge import rouge_scores

MUSE_VERBMEM_TOKENS = 128
MUSE_KNOWMEM_TOKENS = 32
# the record fields of a qa/options item's generated answers, in record order
QA_GENERATION_KEYS = ("generated", "generated_paraphrased_question")


# ----------------------------------------------------------------------------- requests
@dataclasses.dataclass(frozen=True)
class Prompt:
    """One generation prompt as every kind of system takes it: the engine's token ids (the chat template
    applied where `question` is set), the answer budget, and the user turn for systems that take chat
    messages (None: a raw-text completion, e.g. MUSE's few-shot and verbatim prompts)."""
    ids: list[int]
    budget: int
    question: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class GenRequest:
    """Item `item` of task `task` asks for one generated answer, recorded under `key`."""
    task: int
    item: int
    key: str
    prompt: Prompt


@dataclasses.dataclass(frozen=True)
class ScoreRequest:
    """Item `item` of task `task` asks for the log-probabilities of its `continuations` after `prefix`
    (teacher forcing), recorded under `keys` (gt, paraphrased, perturbed<k>, text)."""
    task: int
    item: int
    prefix: list[int]
    continuations: list[list[int]]
    keys: list[str]


@dataclasses.dataclass
class Requests:
    gen: list[GenRequest] = dataclasses.field(default_factory=list)
    tf: list[ScoreRequest] = dataclasses.field(default_factory=list)


def _ids(tokenizer, text: str, special: bool = False) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def _knowmem_prompt(icl, question: str) -> str:
    shots = "".join(f"Question: {r.question}\nAnswer: {r.answer}\n\n" for r in icl)
    return f"{shots}Question: {question}\nAnswer:"


def qa_generation_prompts(task: Task, r) -> list[tuple[str, str]]:
    """(record field, question) of each answer a qa/options item generates: its question, and a
    forget item's paraphrased question where it has one (the field names are QA_GENERATION_KEYS)."""
    out = [("generated", r.question)]
    pq = r.extra.get("paraphrased_question")
    if task.role == "forget" and isinstance(pq, str) and pq:
        out.append(("generated_paraphrased_question", pq))
    return out


def _qa_requests(t: int, i: int, task: Task, r, tokenizer, cfg: EvalConfig, want_gen: bool, want_tf: bool,
                 eot: str) -> Requests:
    out = Requests()
    prompt = _ids(tokenizer, prompt_text(tokenizer, r.question))
    if want_gen:
        for key, text in qa_generation_prompts(task, r):
            ids = prompt if key == "generated" else _ids(tokenizer, prompt_text(tokenizer, text))
            out.gen.append(GenRequest(t, i, key, Prompt(ids, cfg.max_new_tokens, text)))
    if want_tf:
        answers, keys = [r.answer], ["gt"]
        para = r.answer if task.kind == "options" else r.extra.get("paraphrased_answer")
        if isinstance(para, str) and task.kind == "qa":
            answers.append(para)
            keys.append("paraphrased")
        for k, p in enumerate(r.extra.get("perturbed_answer") or []):
            answers.append(p)
            keys.append(f"perturbed{k}")
        room = max(1, cfg.max_length - len(prompt))
        out.tf.append(ScoreRequest(t, i, prompt, [_ids(tokenizer, a + eot)[:room] for a in answers], keys))
    return out


def build_requests(tasks: list[Task], tokenizer, cfg: EvalConfig) -> Requests:
    """Every generation and teacher-forcing request the config's metrics need, in task and item order."""
    metrics = expand_metrics(cfg.metrics)
    want_gen = bool(GENERATION_METRICS & metrics)
    want_tf = bool(metrics - GENERATION_METRICS - {"privleak"})
    eot = end_of_turn(tokenizer)
    req = Requests()
    for t, task in enumerate(tasks):
        for i, r in enumerate(task.items):
            if task.kind in ("qa", "options"):
                got = _qa_requests(t, i, task, r, tokenizer, cfg, want_gen, want_tf, eot)
                req.gen += got.gen
                req.tf += got.tf
            elif task.kind == "verbmem":
                prompt = _ids(tokenizer, r.question, special=True)
                if want_gen:
                    req.gen.append(GenRequest(t, i, "generated", Prompt(prompt, MUSE_VERBMEM_TOKENS)))
                if "memorization" in metrics and prompt:
                    room = max(1, cfg.max_length - len(prompt))
                    req.tf.append(ScoreRequest(t, i, prompt, [_ids(tokenizer, r.answer)[:room]], ["gt"]))
            elif task.kind == "knowmem" and want_gen:
                ids = _ids(tokenizer, _knowmem_prompt(task.icl, r.question), special=True)
                req.gen.append(GenRequest(t, i, "generated", Prompt(ids, MUSE_KNOWMEM_TOKENS)))
            elif task.kind == "text" and "privleak" in metrics:
                ids = _ids(tokenizer, r.answer, special=True)[:cfg.max_length]
                if len(ids) >= 2:
                    req.tf.append(ScoreRequest(t, i, ids[:1], [ids[1:]], ["text"]))
    return req


# ----------------------------------------------------------------------------- per-item records
def _knowmem_answer(text: str) -> str:
    """A few-shot completion ends where the model starts the next example."""
    return text.split("\n\n")[0].split("Question:")[0].strip()


def qa_generation_fields(r, key: str, text: str) -> dict:
    """The record fields of one generated answer of item `r` (`key`: one of QA_GENERATION_KEYS),
    with its ROUGE against the item's answer."""
    text = text.strip()
    if key == "generated":
        return {"generated_text": [r.question, text, r.answer], **rouge_scores(r.answer, text)}
    return {"generated_paraphrased_question": text,
            "rougeL_recall_paraphrased_question": rouge_scores(r.answer, text)["rougeL_recall"]}


def _qa_record(task: Task, r, gen: dict, scored: dict, keys_present: bool) -> dict:
    """One item in TOFU's log field names (plus EM/ES and paraphrased-question ROUGE)."""
    rec: dict = {"question": r.question, "answer": r.answer}
    for key in QA_GENERATION_KEYS:
        if key in gen:
            rec.update(qa_generation_fields(r, key, gen[key]))
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


def aggregate(task: Task, items: list[dict], cfg: EvalConfig) -> dict:
    metrics = expand_metrics(cfg.metrics)
    agg: dict = {"n_items": len(items)}
    col = lambda k: [it[k] for it in items if k in it]  # noqa: E731
    if task.kind in ("qa", "options"):
        if "probability" in metrics and col("probability"):
            agg["probability"] = finite_mean(col("probability"))
        if "rouge" in metrics and col("rougeL_recall"):
            agg["rougeL_recall"] = finite_mean(col("rougeL_recall"))
            agg["rouge1_recall"] = finite_mean(col("rouge1_recall"))
            if col("rougeL_recall_paraphrased_question"):
                agg["rougeL_recall_paraphrased_question"] = finite_mean(col("rougeL_recall_paraphrased_question"))
        if "truth_ratio" in metrics and col("truth_ratio"):
            score = TOFU.forget_truth_ratio_score if task.role == "forget" else TOFU.retain_truth_ratio_score
            agg["truth_ratio"] = score(col("truth_ratio"))
        if "memorization" in metrics and col("exact_memorization"):
            agg["exact_memorization"] = finite_mean(col("exact_memorization"))
            agg["extraction_strength"] = finite_mean(col("extraction_strength"))
    elif task.kind in ("verbmem", "knowmem"):
        for key in ("rougeL_f1", "exact_memorization", "extraction_strength"):
            if col(key):
                agg[key] = finite_mean(col(key))
    elif task.kind == "text" and col("min_k"):
        agg[f"min_{int(cfg.min_k * 100)}%"] = finite_mean(col("min_k"))
    return agg



def task_results(tasks: list[Task], gen_out: dict, scored_out: dict, cfg: EvalConfig) -> dict:
    """{task name: {kind, role, source, fingerprint, aggregate, items}} from the engines' outputs,
    keyed by (task index, item index)."""
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
                if "gt" in sc:  # verbmem: is the true continuation what greedy decoding reproduces?
                    rec["exact_memorization"] = MEM.exact_memorization(sc["gt"].greedy)
                    rec["extraction_strength"] = MEM.extraction_strength(sc["gt"].greedy)
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
    return out_tasks
