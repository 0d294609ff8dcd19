"""From benchmark tasks to engine requests, and from engine outputs to per-item records and
per-task aggregates (the numbers themselves come from the pure functions in metrics/)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from ..data.formatting import end_of_turn, prompt_text
from .benchmarks import Task
from .config import GENERATION_METRICS, EvalConfig, expand_metrics
from .metrics import memorization as MEM
from .metrics import mia as MIA
from .metrics import tofu as TOFU
from .metrics.means import finite_mean
from .metrics.rouge import rouge_scores
from .perturbed import DROPPED_KEY, KEPT_KEY, dropped_perturbed, is_perturbed, perturbed_index
from .results import MuseRecord, QARecord, Record, TaskResult, TextRecord, column

MUSE_VERBMEM_TOKENS = 128
MUSE_KNOWMEM_TOKENS = 32
# the record fields of a qa/options item's generated answers, in record order
QA_GENERATION_KEYS = ("generated", "generated_paraphrased_question")


# ----------------------------------------------------------------------------- requests
@dataclasses.dataclass(frozen=True)
class Prompt:
    """One generation prompt as every kind of system takes it: the engine's token ids (the chat template
    applied where `question` is set), the answer budget, and the user turn for systems that take chat
    messages (None: a raw-text completion, e.g. MUSE's few-shot and verbatim prompts). `temperature` 0 is
    greedy decoding; above 0 the answer is sampled, with `seed` (leak@k's repeated samples)."""
    ids: list[int]
    budget: int
    question: Optional[str] = None
    temperature: float = 0.0
    seed: Optional[int] = None


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
    pq = r.paraphrased_question
    if task.role == "forget" and pq:
        out.append(("generated_paraphrased_question", pq))
    return out


@dataclasses.dataclass(frozen=True)
class Wants:
    """What a config's metrics ask of the engines, read once per build."""
    metrics: set
    gen: bool            # a generation metric (ROUGE)
    tf: bool             # a teacher-forced one
    eot: str             # the chat template's end of turn (appended to scored answers)
    # (task, item) -> perturbed answers a non-forget item's truth ratio leaves out (perturbed.py's rule)
    dropped: dict = dataclasses.field(default_factory=dict)


def _qa_requests(t: int, i: int, task: Task, r, tokenizer, cfg: EvalConfig, w: Wants) -> Requests:
    """Its question's answer and a forget item's paraphrased question's (generated); the answer, its
    paraphrase and perturbations (teacher forced; options: the true answer and the false options)."""
    out = Requests()
    prompt = _ids(tokenizer, prompt_text(tokenizer, r.question))
    if w.gen:
        for key, text in qa_generation_prompts(task, r):
            ids = prompt if key == "generated" else _ids(tokenizer, prompt_text(tokenizer, text))
            out.gen.append(GenRequest(t, i, key, Prompt(ids, cfg.max_new_tokens, text)))
    if w.tf:
        answers, keys = [r.answer], ["gt"]
        para = r.answer if task.kind == "options" else r.paraphrased_answer
        if para is not None and task.kind == "qa":
            answers.append(para)
            keys.append("paraphrased")
        dropped = w.dropped.get((t, i), ())
        for k, p in enumerate(r.perturbed_answers):
            answers.append(p)
            keys.append(f"{DROPPED_KEY if k in dropped else KEPT_KEY}{k}")
        room = max(1, cfg.max_length - len(prompt))
        out.tf.append(ScoreRequest(t, i, prompt, [_ids(tokenizer, a + w.eot)[:room] for a in answers], keys))
    return out


def _verbmem_requests(t: int, i: int, task: Task, r, tokenizer, cfg: EvalConfig, w: Wants) -> Requests:
    """The passage's first half continued (generated); its second half (teacher forced, for memorisation)."""
    out = Requests()
    prompt = _ids(tokenizer, r.question, special=True)
    if w.gen:
        out.gen.append(GenRequest(t, i, "generated", Prompt(prompt, MUSE_VERBMEM_TOKENS)))
    if "memorization" in w.metrics and prompt:
        room = max(1, cfg.max_length - len(prompt))
        out.tf.append(ScoreRequest(t, i, prompt, [_ids(tokenizer, r.answer)[:room]], ["gt"]))
    return out


def _knowmem_requests(t: int, i: int, task: Task, r, tokenizer, cfg: EvalConfig, w: Wants) -> Requests:
    """The question after MUSE's few-shot examples (generated)."""
    out = Requests()
    if w.gen:
        ids = _ids(tokenizer, _knowmem_prompt(task.icl, r.question), special=True)
        out.gen.append(GenRequest(t, i, "generated", Prompt(ids, MUSE_KNOWMEM_TOKENS)))
    return out


def _text_requests(t: int, i: int, task: Task, r, tokenizer, cfg: EvalConfig, w: Wants) -> Requests:
    """The passage's token log-probabilities (teacher forced, for Min-K% membership inference)."""
    out = Requests()
    if "privleak" in w.metrics:
        ids = _ids(tokenizer, r.answer, special=True)[:cfg.max_length]
        if len(ids) >= 2:
            out.tf.append(ScoreRequest(t, i, ids[:1], [ids[1:]], ["text"]))
    return out


def build_requests(tasks: list[Task], tokenizer, cfg: EvalConfig) -> Requests:
    """Every generation and teacher-forcing request the config's metrics need, in task and item order."""
    metrics = expand_metrics(cfg.metrics)
    w = Wants(metrics, bool(GENERATION_METRICS & metrics), bool(metrics - GENERATION_METRICS - {"privleak"}),
              end_of_turn(tokenizer), dropped_perturbed(tasks))
    req = Requests()
    for t, task in enumerate(tasks):
        kind = TASK_KINDS[task.kind]
        for i, r in enumerate(task.items):
            got = kind.requests(t, i, task, r, tokenizer, cfg, w)
            req.gen += got.gen
            req.tf += got.tf
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


def _teacher_forced_fields(task: Task, scored: dict) -> dict:
    """A qa/options item's fields from its teacher-forced answers: the true answer's loss and memorisation,
    the perturbed and paraphrased answers' losses, the truth ratio and the answer probability. The losses
    are of every perturbed answer; the truth ratio and option probability leave out those scored under
    a `dropped<k>` key (evaluation/perturbed.py: a non-forget item's false answer that names a forget
    subject), and then the ratio and probability over all of them are kept beside them (`*_all`)."""
    gt = scored["gt"]
    out = dict(avg_gt_loss=gt.avg_loss, gt_loss=-gt.sum_logprob, num_token_gt=gt.n_tokens,
               exact_memorization=MEM.exact_memorization(gt.greedy),
               extraction_strength=MEM.extraction_strength(gt.greedy))
    order = sorted((k for k in scored if is_perturbed(k)), key=perturbed_index)
    pert = [scored[k] for k in order]
    kept = [scored[k].avg_loss for k in order if k.startswith(KEPT_KEY)]
    dropped = [perturbed_index(k) for k in order if k.startswith(DROPPED_KEY)]
    para = scored["gt"] if task.kind == "options" else scored.get("paraphrased")
    pert_losses = [s.avg_loss for s in pert]
    if pert:
        out.update(average_perturb_loss=pert_losses, perturb_loss=[-s.sum_logprob for s in pert],
                   num_token_perturb=[s.n_tokens for s in pert])
    if para is not None:
        out.update(avg_paraphrased_loss=para.avg_loss, paraphrased_loss=-para.sum_logprob,
                   num_token_paraphrased=para.n_tokens)
    if para is not None and kept:
        out["truth_ratio"] = TOFU.truth_ratio(para.avg_loss, kept)
    options = task.kind == "options"
    if not (options and dropped and not kept):
        out["probability"] = (TOFU.option_probability(gt.avg_loss, kept) if options
                              else TOFU.answer_probability(gt.avg_loss))
    if dropped:
        out["perturbed_dropped"] = dropped
        if para is not None:
            out["truth_ratio_all"] = TOFU.truth_ratio(para.avg_loss, pert_losses)
        if options:
            out["probability_all"] = TOFU.option_probability(gt.avg_loss, pert_losses)
    return out


def _qa_record(task: Task, r, gen: dict, scored: dict, cfg: EvalConfig) -> QARecord:
    """One item in TOFU's log field names (plus EM/ES and paraphrased-question ROUGE)."""
    rec: dict = {}
    for key in QA_GENERATION_KEYS:
        if key in gen:
            rec.update(qa_generation_fields(r, key, gen[key]))
    if "gt" in scored:
        rec.update(_teacher_forced_fields(task, scored))
    return QARecord(r.question, r.answer, **rec)


def _muse_record(task: Task, r, gen: dict, scored: dict, cfg: EvalConfig) -> MuseRecord:
    """verbmem / knowmem: the generated continuation or answer with its ROUGE-L F1; verbmem's memorisation."""
    rec: dict = {}
    if "gt" in scored:  # verbmem: is the true continuation what greedy decoding reproduces?
        rec["exact_memorization"] = MEM.exact_memorization(scored["gt"].greedy)
        rec["extraction_strength"] = MEM.extraction_strength(scored["gt"].greedy)
    if "generated" in gen:
        text = gen["generated"] if task.kind == "verbmem" else _knowmem_answer(gen["generated"])
        rec["generated"] = text
        rec["rougeL_f1"] = rouge_scores(r.answer, text)["rougeL_f1"]
    return MuseRecord(r.question, r.answer, **rec)


def _text_record(task: Task, r, gen: dict, scored: dict, cfg: EvalConfig) -> TextRecord:
    """A passage's membership-inference scores (metrics/mia.py): Min-K%, mean loss (LOSS), ZLib, Min-K%++."""
    if "text" not in scored:
        return TextRecord(0)
    text = scored["text"]
    pp = MIA.min_k_plus_plus_score(text.logprobs, text.means, text.stds, cfg.min_k) if text.means else None
    return TextRecord(text.n_tokens, MEM.min_k_score(text.logprobs, cfg.min_k), text.avg_loss,
                      MIA.zlib_score(text.logprobs, r.answer), pp)


def _qa_aggregate(task: Task, items: list[QARecord], cfg: EvalConfig, metrics: set) -> dict:
    agg: dict = {}
    col = lambda k: column(items, k)  # noqa: E731
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
    agg.update(_all_perturbed_aggregate(items, metrics))
    if "memorization" in metrics and col("exact_memorization"):
        agg["exact_memorization"] = finite_mean(col("exact_memorization"))
        agg["extraction_strength"] = finite_mean(col("extraction_strength"))
    return agg


def _all_perturbed_aggregate(items: list[QARecord], metrics: set) -> dict:
    """Where perturbed answers were left out (evaluation/perturbed.py): how many, and the retain-side truth
    ratio and option probability with every perturbed answer, to read beside the task's own."""
    dropped = sum(len(it.perturbed_dropped or ()) for it in items)
    if not dropped:
        return {}
    out: dict = {"perturbed_dropped": dropped}
    ratios = [it.truth_ratio_all if it.truth_ratio_all is not None else it.truth_ratio for it in items]
    if "truth_ratio" in metrics and any(r is not None for r in ratios):
        out["truth_ratio_all_perturbed"] = TOFU.retain_truth_ratio_score([r for r in ratios if r is not None])
    probs = [it.probability_all if it.probability_all is not None else it.probability for it in items]
    if "probability" in metrics and any(it.probability_all is not None for it in items):
        out["probability_all_perturbed"] = finite_mean([p for p in probs if p is not None])
    return out


def _muse_aggregate(task: Task, items: list[MuseRecord], cfg: EvalConfig, metrics: set) -> dict:
    return {key: finite_mean(column(items, key)) for key in ("rougeL_f1", "exact_memorization", "extraction_strength")
            if column(items, key)}


def _text_aggregate(task: Task, items: list[TextRecord], cfg: EvalConfig, metrics: set) -> dict:
    return {f"min_{int(cfg.min_k * 100)}%": finite_mean(column(items, "min_k"))} if column(items, "min_k") else {}


@dataclasses.dataclass(frozen=True)
class TaskKind:
    """How one kind of task is measured: the engine requests of an item, its record from the engines' outputs
    (gen: {key: text}, scored: {key: Scored}), the task's aggregate over the records."""
    requests: Callable
    record: Callable
    aggregate: Callable


TASK_KINDS: dict[str, TaskKind] = {
    "qa": TaskKind(_qa_requests, _qa_record, _qa_aggregate),            # TOFU-style question / answer
    "options": TaskKind(_qa_requests, _qa_record, _qa_aggregate),       # the true answer among false options
    "verbmem": TaskKind(_verbmem_requests, _muse_record, _muse_aggregate),   # MUSE verbatim memorisation
    "knowmem": TaskKind(_knowmem_requests, _muse_record, _muse_aggregate),   # MUSE knowledge memorisation
    "text": TaskKind(_text_requests, _text_record, _text_aggregate),    # passages for membership inference
}


def aggregate(task: Task, items: list[Record], cfg: EvalConfig) -> dict:
    return {"n_items": len(items), **TASK_KINDS[task.kind].aggregate(task, items, cfg, expand_metrics(cfg.metrics))}


def task_result(task: Task, items: list[Record], cfg: EvalConfig) -> TaskResult:
    return TaskResult(task.kind, task.role, task.source, task.fingerprint(), aggregate(task, items, cfg), items)


def task_results(tasks: list[Task], gen_out: dict, scored_out: dict, cfg: EvalConfig) -> dict[str, TaskResult]:
    """{task name: TaskResult} from the engines' outputs, keyed by (task index, item index)."""
    out_tasks = {}
    for t, task in enumerate(tasks):
        record = TASK_KINDS[task.kind].record
        items = [record(task, r, gen_out.get((t, i), {}), scored_out.get((t, i), {}), cfg)
                 for i, r in enumerate(task.items)]
        out_tasks[task.name] = task_result(task, items, cfg)
    return out_tasks
