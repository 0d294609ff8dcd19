"""`unlearn guard build`: compile a forget set into a guard policy directory (see policy.py).

Steps: phrases per item (phrases.py) -> targets (recurring names asked about that no retain prompt
names) and their lexical probes -> forbidden token sequences for every variant (trie.py) ->
per-target semantic penalty from the model's input embeddings (penalty.py) -> embeddings of the
forget questions in a faiss index -> threshold calibrated on retain prompts to the configured
false-positive rate, each prompt rendered with the chat template and classified exactly as served
(classifier.as_served: every disguise view and window) -> written whole (a temporary directory
renamed into place, so an interrupted build leaves no half policy).

Subjects (subjects.py) give the targets (their names and aliases) instead of the names the questions
recur on. A corpus (corpus.py, `build_corpus_policy`) adds its verbatim-quote structure (quotes.py):
in `forget` mode beside the knowledge guard built as above from its passages' sentence windows (no
targets: a corpus's recurring names are withheld in flagged answers only; with `number_heads`, the
first digits of the numbers they state too), in `takedown` mode alone (no targets, no items, no
classifier: quotes are withheld, facts may still be answered).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..data.records import QA
from ..data.sources import load_spec
from ..provenance import package_versions
from .embedder import EMBEDDER_NAME, embed, embedder_kind, load_embedder, static_record
from .penalty import centred_unit, semantic_penalty
from .phrases import STOPWORDS, Background, MentionIndex, distinctive_parts, group_targets, item_phrases, number_heads, quoted, stems
from ..files import json_digest, sha256_file
from . import disguise
from .calibrate import (calibrate_soft_mask, calibration_record, calibration_split, check_counterfactuals,
                        reference_items)
from .classifier import MIN_COLLAPSED, PromptClassifier, as_served
from .corpus import PASSAGE_KEY
from .policy import (FILES, FORMAT, FORMAT_VERSION, OPTIONAL_FILES, QUOTES_FILE, GuardConfig, Policy, PolicyError, read_meta,
                     tokenizer_fingerprint)
from .subjects import Subject, subject_items
from .textmatch import TokenTexts
from .trie import token_sequences

# the semantic index: a HNSW graph above this many forget questions (semantic_index), with its parameters
HNSW_MIN_ITEMS = 4096
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128
HNSW_EF_SEARCH = 128
MIN_ANSWER_WORDS = 4       # the answers index: a shorter answer's row repeats its question's (_answers_index)


def _item_text(item: QA) -> str:
    """What the classifier indexes an item by: its question; raw text by its start, but a corpus window
    (corpus.py `windows`, cut to size) whole."""
    if item.question:
        return item.question
    return item.answer if PASSAGE_KEY in item.extra else item.answer[:300]


def check_forget_set(forget: list[QA]) -> None:
    if not forget:
        raise PolicyError("the forget set is empty: a guard policy needs at least one item to forget")
    empty = [n for n, item in enumerate(forget) if not (item.answer or "").strip()]
    if len(empty) == len(forget):
        raise PolicyError("the forget set has no answers: every item's 'answer' is empty, so there is nothing "
                          "to forbid (a guard needs the facts it must stop)")
    if empty:
        raise PolicyError(f"forget items {empty[:10]} have empty answers; remove them or give their answers")


def key_tokens(tokenizer, phrases: list[str]) -> list[int]:
    """Tokens of a target's names/titles that carry meaning (not function words or punctuation); with
    a small vocabulary that splits names into short pieces, every alphabetic piece."""
    pieces = {tok: tokenizer.decode([tok]).strip().lower() for seq in token_sequences(tokenizer, phrases) for tok in seq}
    out = [t for t, p in pieces.items() if len(p) >= 3 and any(c.isalpha() for c in p) and p not in STOPWORDS]
    return sorted(out or [t for t, p in pieces.items() if any(c.isalpha() for c in p)])


def collapsed_probes(probes: list[str], background: list[str]) -> list[str]:
    """The probes the spelled-out test searches for inside collapsed text (disguise.collapsed): those
    of at least MIN_COLLAPSED letters that occur in no collapsed retain prompt, forwards or backwards
    (`background` is already collapsed), so the test never fires on an ordinary run of words."""
    keys = dict.fromkeys(disguise.collapsed(disguise.fold(p)) for p in probes)
    joined = "\0".join(background)     # one scan per probe; no match can span two prompts
    return [k for k in keys if len(k) >= MIN_COLLAPSED and k not in joined and k[::-1] not in joined]


def calibrate(named: np.ndarray, scores: np.ndarray, fpr: float) -> tuple[float, float]:
    """Smallest threshold whose false-positive rate on retain prompts is <= `fpr`, given which of them
    the lexical test already flags (`named`) and the semantic scores of the rest. Returns
    (threshold, measured false-positive rate)."""
    n = len(scores)
    allowed = math.floor(fpr * n + 1e-9) - int(named.sum())
    rest = np.sort(scores[~named])[::-1]
    if allowed <= 0 or len(rest) == 0:
        threshold = float(rest[0]) + 1e-6 if len(rest) else 1.0
    else:
        allowed = min(allowed, len(rest))
        # above the (allowed+1)-th highest score: at most `allowed` retain prompts reach it
        threshold = float(rest[allowed]) + 1e-6 if allowed < len(rest) else float(rest[-1])
    flagged = named | (scores >= threshold)
    return threshold, float(flagged.mean()) if n else 0.0


def _penalties(model_path: str, tokenizer, target_phrases: list[list[str]], cfg: GuardConfig):
    if cfg.penalty <= 0:
        return [(torch.zeros(0, dtype=torch.long), torch.zeros(0)) for _ in target_phrases]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    unit = centred_unit(model.get_input_embeddings().weight.detach())
    del model
    return [semantic_penalty(unit, key_tokens(tokenizer, phrases), cfg.penalty, cfg.penalty_min_sim)
            for phrases in target_phrases]


def _fingerprint(records: list[QA]) -> str:
    return json_digest([r.to_json() for r in records])


def _retain_prompts(forget: list[QA], retain: Optional[list[QA]], cfg: GuardConfig) -> list[QA]:
    """The calibration prompts: retain questions the forget set does not ask, spread down to max_retain."""
    asked = {item.question for item in forget}
    retain = [r for r in (retain or []) if r.question and r.question not in asked]   # never calibrate on the forget set
    if retain and len(retain) > cfg.max_retain:
        step = len(retain) / cfg.max_retain
        retain = [retain[int(i * step)] for i in range(cfg.max_retain)]
    return retain


def _targets(questions: list[str], background: list[str]) -> list[dict]:
    """Recurring names the questions ask about, less those the retain prompts also name ("South Africa": a
    place the retain set asks about too, not what the forget set is about); each with its probes (the name
    and its distinctive parts) and their collapsed spellings."""
    known = Background(background)    # asked once per name and name part: indexed (10^4 targets x 10^3 prompts)
    spelled = [disguise.collapsed(disguise.fold(q)) for q in background]
    targets = []
    for name in (n for n in group_targets(questions) if not known.mentions(n)):
        probes = list(dict.fromkeys([name] + (distinctive_parts(name, known) if background else [])))
        targets.append({"name": name, "probes": probes, "collapsed": collapsed_probes(probes, spelled)})
    return targets


def _subject_targets(subjects: list[Subject], background: list[str]) -> list[dict]:
    """A target per subject, as given: its name and aliases are probes whatever the retain prompts say
    (the user named them), with the name's distinctive parts where there are retain prompts to tell."""
    known = Background(background)
    spelled = [disguise.collapsed(disguise.fold(q)) for q in background]
    targets = []
    for subject in subjects:
        parts = distinctive_parts(subject.name, known) if background else []
        probes = list(dict.fromkeys([subject.name, *subject.aliases, *parts]))
        targets.append({"name": subject.name, "aliases": list(subject.aliases), "probes": probes,
                        "collapsed": collapsed_probes(probes, spelled)})
    return targets


def _targets_and_items(forget: list[QA], background: list[str], cfg: GuardConfig,
                       subjects: Optional[list[Subject]], owners: Optional[list[int]],
                       corpus: bool = False) -> tuple[list[dict], list[dict]]:
    """The targets (recurring names asked about, or the subjects; none for a corpus's windows) and the
    items with their targets and phrases (a subject's items belong to it whether or not they name it)."""
    if subjects is None:
        # a corpus's recurring names (New York, BBC News) are phrases of the windows that state them, withheld
        # in flagged answers: not persons to stop naming in every answer (a subject policy names those)
        targets = [] if corpus else _targets([_item_text(item) for item in forget], background)
        items = _items(forget, targets, cfg)
    else:
        targets = _subject_targets(subjects, background)
        items = _items(forget, targets, cfg)
        for item, owner in zip(items, owners or []):
            item["targets"] = sorted({*item["targets"], owner})
    titles = _titles(items, targets, background)
    return [{**t, "titles": ts} for t, ts in zip(targets, titles)], items


def _items(forget: list[QA], targets: list[dict], cfg: GuardConfig) -> list[dict]:
    """Each forget item with the targets its question or answer names and the phrases it withholds."""
    probed = MentionIndex([target["probes"] for target in targets])
    items = [{"question": item.question, "answer": item.answer, "targets": probed.find(f"{item.question or ''} {item.answer}"),
              "phrases": item_phrases(item.question, item.answer, with_key_words=cfg.key_words)} for item in forget]
    if cfg.number_heads:
        for item in items:
            item["number_heads"] = number_heads(item["phrases"])
    return items


def number_starts(tokenizer, digits: list[str]) -> dict[str, list[list[int]]]:
    """Per digit, the token sequences that begin a number with it after a space, however the vocabulary
    splits numbers: each token of a space and digits starting with it (" 7", " 19", "▁19"), and the
    tokens a space is written as before a digit ("a 7" less "a" and "7") followed by each token of digits
    starting with it (" ", "7"). Never a digit alone or after punctuation, which would also stop the
    inside of "2017" or "2.7"."""
    texts = [raw.decode("utf-8", "replace") for raw in TokenTexts(tokenizer).raw]   # as written, not normalised
    head = tokenizer("a", add_special_tokens=False)["input_ids"]
    both = tokenizer("a 7", add_special_tokens=False)["input_ids"]
    space = both[len(head):-1] if both[:len(head)] == head else []
    out: dict[str, list[list[int]]] = {d: [] for d in digits}
    for tok, text in enumerate(texts):
        number = text.lstrip(" ")
        if not number.isascii() or not number.isdigit() or number[0] not in out:
            continue
        if number != text:
            out[number[0]].append([tok])
        elif space:
            out[number[0]].append(space + [tok])
    return out


def _target_phrases(targets: list[dict], items: list[dict]) -> list[list[str]]:
    """Per target: its name, the name's parts and stems, and the titles quoted in its items' answers."""
    by_target: list[list[dict]] = [[] for _ in targets]
    for it in items:
        for t in dict.fromkeys(it["targets"]):
            by_target[t].append(it)
    out = []
    for target, mine in zip(targets, by_target):
        titles = [q for it in mine for q in quoted(it["answer"])]
        parts = [p for p in target["name"].split() if p.lower() not in STOPWORDS] + stems(target["name"])
        out.append(list(dict.fromkeys([target["name"], *target.get("aliases", ()), *parts, *titles])))
    return out


def _titles(items: list[dict], targets: list[dict], background: list[str]) -> list[list[str]]:
    """Per target: the titles quoted in its items' answers that the classifier reads as naming it (a
    question quoting "Shale Stories" is about its author, named or not): those of two or more words
    with a word of four letters or more that no retain prompt uses, so that no retain prompt mentions the
    title either (a title the retain set asks about too is not what the forget set is about, as with
    names). A target whose name has no such word ("African American", a name made of common words) gets none."""
    known = Background(background)
    out: list[list[str]] = [[] for _ in targets]
    for it in items:
        for title in quoted(it["answer"]):
            if len(title.split()) < 2 or not distinctive_parts(title, known):
                continue
            for t in dict.fromkeys(it["targets"]):
                if not background or len(targets[t]["probes"]) > 1:
                    out[t].append(title)
    return [list(dict.fromkeys(titles)) for titles in out]


def _threshold(classifier: PromptClassifier, tokenizer, background: list[str], cfg: GuardConfig) -> dict:
    """The semantic threshold at the configured false-positive rate on the retain prompts, scored exactly as
    served (chat template, every disguise view and window); prompts that name a target count as flagged."""
    if not background:
        return {"threshold": cfg.default_threshold, "retain_fpr": None}
    scored = classifier.classify(as_served(tokenizer, background), threshold=math.inf)   # flagged = named a target
    named = np.array([d.flagged for d in scored])
    scores = np.array([d.score for d in scored])
    threshold, fpr = calibrate(named, scores, cfg.fpr)
    rest = scores[~named]
    return {"threshold": threshold, "retain_fpr": fpr, "retain_named": int(named.sum()),
            "retain_score_p50": float(np.median(rest)), "retain_score_p99": float(np.quantile(rest, 0.99))}


def _recalls(classifier: PromptClassifier, tokenizer, index, vecs, forget: list[QA], threshold: float) -> dict:
    """How often the classifier flags the forget questions, their paraphrases, and each question scored
    against the *other* items only (leave-one-out: how well the policy generalises to a question it was not
    built from)."""
    questions = [_item_text(item) for item in forget]

    def recall(texts: list[str]) -> float:
        return float(np.mean([d.flagged for d in classifier.classify(as_served(tokenizer, texts), threshold)]))

    sims, _ = index.search(vecs, 2)
    second = sims[:, 1] if sims.shape[1] > 1 else np.zeros(len(questions))
    named = np.array([bool(classifier.named(q)) for q in questions])
    paraphrases = [item.paraphrased_question for item in forget if item.paraphrased_question is not None]
    return {"forget_recall_leave_one_out": float((named | (second >= threshold)).mean()),
            "forget_recall": recall(questions), "paraphrase_recall": recall(paraphrases) if paraphrases else None}


def _check_build_inputs(forget: list[QA], cfg: GuardConfig) -> None:
    check_forget_set(forget)
    cfg.validate()
    if cfg.calibrated:
        check_counterfactuals(forget)
    if not 0.0 <= cfg.fpr < 1.0:
        raise PolicyError(f"fpr must be in [0, 1), got {cfg.fpr}")


def semantic_index(vecs: np.ndarray):
    """The inner-product index of the forget questions' embeddings (unit vectors: a cosine similarity).
    Exact (flat) up to HNSW_MIN_ITEMS questions; above, a HNSW graph: a flat search reads every vector
    (at 20,000 questions about 1 ms a query on 2 cores, a tenth of a lone classification), the graph a
    few hundred of them. Built on one thread so that the same questions give the same graph (the
    policy's checksums stay reproducible)."""
    import faiss

    if len(vecs) <= HNSW_MIN_ITEMS:
        index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(vecs)
        return index
    index = faiss.IndexHNSWFlat(vecs.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.hnsw.efSearch = HNSW_EF_SEARCH
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(vecs)
    finally:
        faiss.omp_set_num_threads(threads)
    return index


def build_policy(forget: list[QA], out_dir: str | Path, model_path: str, tokenizer, cfg: GuardConfig,
                 retain: Optional[list[QA]] = None, sources: Optional[dict] = None, progress=print,
                 probe=None, subjects: Optional[list[Subject]] = None, quotes=None, corpus: Optional[dict] = None) -> dict:
    """Compile and write the policy; returns its policy.json contents. `probe`: the class that measures
    truth ratios through the guard (evaluation/calibration.py `RatioProbe`), needed by `mode: calibrated`
    only; guard/ sits below evaluation/, so `evaluation.calibration.build_policy` passes it. `subjects`
    (subjects.py): the targets are theirs and the forget set is made from them (`forget` is ignored);
    `quotes`: a corpus's QuoteIndex (quotes.py), written beside, with `corpus` (policy.json's record of it)."""
    owners = None
    if subjects is not None:
        forget, owners = subject_items(subjects)
    _check_build_inputs(forget, cfg)
    if cfg.calibrated and probe is None:
        raise PolicyError("mode: calibrated measures the model through the guard: build it with "
                          "unlearnkit.evaluation.calibration.build_policy (as `unlearn guard build` does)")
    retain = _retain_prompts(forget, retain, cfg)
    questions = [_item_text(item) for item in forget]
    background = [r.question for r in retain]
    targets, items = _targets_and_items(forget, background, cfg, subjects, owners, corpus=corpus is not None)
    progress(f"{len(forget)} forget items, {len(targets)} targets: {', '.join(t['name'] for t in targets) or '-'}")

    item_seqs = [token_sequences(tokenizer, it["phrases"]) for it in items]
    heads = sorted({d for it in items for d in it.get("number_heads", [])})
    target_phrases = _target_phrases(targets, items)
    target_seqs = [token_sequences(tokenizer, phrases) for phrases in target_phrases]
    progress("semantic penalty over the vocabulary")
    penalties = _penalties(model_path, tokenizer, target_phrases, cfg)

    progress(f"embedding {len(questions)} forget questions ({EMBEDDER_NAME}, {embedder_kind(cfg.embedder)})")
    vecs = embed(questions, embedder=cfg.embedder)
    index = semantic_index(vecs)
    answers = _answers_index(forget, cfg)

    # decisions exactly as served: the classifier over the policy as built so far
    classifier = PromptClassifier(Policy(Path(out_dir), {"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                                                         "calibration": {"threshold": cfg.default_threshold},
                                                         "targets": targets, "items": items}, index, [], [],
                                         answers=answers))
    if retain:
        progress(f"calibrating on {len(retain)} retain prompts")
    calibration: dict = {"fpr_target": cfg.fpr, "calibrated": bool(retain), "n_retain": len(retain),
                         "prompts": "chat template" if getattr(tokenizer, "chat_template", None) else "plain text",
                         **_threshold(classifier, tokenizer, background, cfg)}
    calibration.update(_recalls(classifier, tokenizer, index, vecs, forget, calibration["threshold"]))

    body = {"n_sequences": sum(map(len, item_seqs)) + sum(map(len, target_seqs)),
            "targets": [{**t, "phrases": p} for t, p in zip(targets, target_phrases)], "items": items}
    meta = _meta(cfg, model_path, tokenizer, sources, forget, retain, calibration, int(vecs.shape[1]), body, quotes, corpus)
    fit = None
    if cfg.calibrated:
        calibration["soft_mask"] = None   # fitted on the written policy, before it is published
        fit = lambda root: _fit_soft_mask(root, forget, model_path, tokenizer, cfg, progress, probe)  # noqa: E731
    sequences = {"items": item_seqs, "targets": target_seqs,
                 **({"number_starts": number_starts(tokenizer, heads)} if heads else {})}
    _write(Path(out_dir), meta, index, sequences, penalties, fit, answers, quotes)
    return meta


def _meta(cfg: GuardConfig, model_path: str, tokenizer, sources: Optional[dict], forget: list[QA], retain: list[QA],
          calibration: dict, dim: int, body: dict, quotes=None, corpus: Optional[dict] = None) -> dict:
    """policy.json: how the policy was built, `body` (its sequences count, targets and items), its calibration."""
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION if quotes is not None else 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(("unlearnkit", "torch", "transformers", "sentence-transformers", "faiss-cpu")),
        "config": cfg.as_meta(),
        "sources": {**(sources or {}), "forget_fingerprint": _fingerprint(forget), "n_forget": len(forget),
                    "retain_fingerprint": _fingerprint(retain) if retain else None},
        # the precision the vectors and the threshold were computed in (bf16 where this machine runs it
        # faster: similarities within ~0.002 of fp32's, so a policy serves alike on either kind of machine)
        "embedder": {"name": EMBEDDER_NAME, "dim": dim, "precision": load_embedder().precision if forget else None}
        if embedder_kind(cfg.embedder) == "minilm" else {**static_record(), "dim": dim},
        "tokenizer": {"model": model_path, "fingerprint": tokenizer_fingerprint(tokenizer),
                      "vocab_size": len(tokenizer)},
        **body, "calibration": calibration,
    }
    if quotes is not None:
        meta["quotes"] = quotes.stats.as_meta()
        meta["corpus"] = corpus or {}
    return meta


def build_corpus_policy(spec: str, out_dir: str | Path, model_path: str, tokenizer, cfg: GuardConfig,
                        retain: Optional[list[QA]] = None, sources: Optional[dict] = None, progress=print,
                        probe=None) -> dict:
    """A corpus policy (`--forget text:FILE|DIR` or muse/raw_forget): the quote structure of its token
    n-grams, with (`forget` mode) or without (`takedown`) the knowledge guard of its passages (`probe`
    as in build_policy)."""
    import time

    from .corpus import passages, read_corpus, tokenize
    from .quotes import QuoteError, build_quote_index

    cfg.validate()
    if cfg.number_heads is None and cfg.corpus == "forget":
        cfg = dataclasses.replace(cfg, number_heads=True)
    documents = read_corpus(spec)
    began = time.perf_counter()
    tokens, starts = tokenize(tokenizer, documents)
    tokenized = time.perf_counter()
    try:
        index = build_quote_index(tokens, starts, cfg.tau, cfg.quote_budget, cfg.bloom_fpr, len(tokenizer))
    except QuoteError as exc:
        raise PolicyError(f"{spec}: {exc}") from None
    stats = index.stats
    corpus = {"mode": cfg.corpus, "spec": spec, "files": len(documents),
              "tokenize_seconds": round(tokenized - began, 2), "build_seconds": round(time.perf_counter() - tokenized, 2)}
    progress(f"quote filter: {stats.kind}, {stats.n_ngrams:,} {stats.tau + 1}-grams of {stats.n_tokens:,} tokens in "
             f"{len(documents)} file(s), {stats.bytes / 2**20:.1f} MiB, false-positive rate {stats.fpr:.3g}")
    if cfg.corpus == "takedown":
        return _takedown(Path(out_dir), model_path, tokenizer, cfg, index, corpus, sources)
    return build_policy(passages(spec, documents), out_dir, model_path, tokenizer, cfg, retain=retain, sources=sources,
                        progress=progress, probe=probe, quotes=index, corpus=corpus)


def _takedown(out: Path, model_path: str, tokenizer, cfg: GuardConfig, quotes, corpus: dict,
              sources: Optional[dict]) -> dict:
    """A policy of the quote filter alone: no targets, no items, an empty index (the runtime does not
    classify its requests: every one gets the filter)."""
    import faiss

    from .embedder import DIM

    calibration = {"fpr_target": cfg.fpr, "calibrated": False, "n_retain": 0, "threshold": 2.0,
                   "classifier": "none (takedown: the quote filter alone)"}
    meta = _meta(cfg, model_path, tokenizer, sources, [], [], calibration, DIM,
                 {"n_sequences": 0, "targets": [], "items": []}, quotes, corpus)
    _write(out, meta, faiss.IndexFlatIP(DIM), {"items": [], "targets": []}, [], quotes=quotes)
    return meta


def _answers_index(forget: list[QA], cfg: GuardConfig):
    """The forget answers' embeddings, row i for item i (`answers: true` and items with questions; an item
    without one is already indexed by its answer). Measured (benchmarks/classifier_recall.py, TOFU forget05,
    half of each author's items in the policy, 1% false positives on retain prompts): held-out questions that
    describe their author from another answer, name left out, flagged 0.57 against 0.38 by the questions
    alone, at the same false-positive rates on retain questions with and without their names, real authors
    and world facts."""
    if not cfg.answers or not any(item.question for item in forget):
        return None
    # an answer of a few words ("1472") says nothing an embedding can place: its row repeats the question's
    return semantic_index(embed([item.answer if len(item.answer.split()) >= MIN_ANSWER_WORDS else _item_text(item)
                                 for item in forget], embedder=cfg.embedder))


def _fit_soft_mask(root: Path, forget: list[QA], model_path: str, tokenizer, cfg: GuardConfig, progress,
                   probe) -> dict:
    """Calibrated mode (calibrate.py): the soft mask fitted on part of the forget set through the
    policy as written, and the held-out part's median truth ratio at that mask. `probe`: the
    RatioProbe class (evaluation/calibration.py)."""
    from ..models.loading import load_model
    from .policy import load_policy
    from .runtime import GuardRuntime

    model, _ = load_model(model_path, dtype=torch.float32, device="cpu")
    runtime = GuardRuntime(load_policy(root, tokenizer), tokenizer)
    fitted, held_out = calibration_split(forget, cfg.fraction)
    reference = None
    if cfg.calibration_reference:
        items = reference_items(load_spec(cfg.calibration_reference), forget)
        progress(f"scoring {len(items)} never-learnt reference items ({cfg.calibration_reference})")
        reference = probe(model, tokenizer, runtime, items).ratios(None, guarded=False)
    result = calibrate_soft_mask(probe(model, tokenizer, runtime, [forget[i] for i in fitted]), cfg, progress,
                                 reference)
    held = None
    if held_out:
        held_probe = probe(model, tokenizer, runtime, [forget[i] for i in held_out])
        held = float(np.median(held_probe.ratios(result.soft_mask, penalty=result.semantic_penalty)))   # as served
        progress(f"held-out forget items ({len(held_out)}): median truth ratio {held:.3f} at the fitted soft mask")
    return calibration_record(result, fitted, held_out, held)


def _write(out: Path, meta: dict, index, sequences: dict, penalties, fit=None, answers=None, quotes=None) -> None:
    """Everything into a temporary directory, renamed into place once whole. `sequences`: sequences.json's
    items, targets and (where items withhold numbers' first digits) number_starts. `fit(tmp)`: a step that
    needs the written policy (calibrated mode) and returns calibration figures for policy.json."""
    import faiss
    from safetensors.torch import save_file

    if out.exists() and not (out / "policy.json").is_file() and any(out.iterdir()):
        raise PolicyError(f"{out} exists and is not a guard policy; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        faiss.write_index(index, str(tmp / "index.faiss"))
        if answers is not None:
            faiss.write_index(answers, str(tmp / "answers.faiss"))
        (tmp / "sequences.json").write_text(json.dumps(sequences))
        tensors = {}
        for i, (idx, val) in enumerate(penalties):
            tensors[f"t{i}.idx"], tensors[f"t{i}.val"] = idx.contiguous(), val.float().contiguous()
        save_file(tensors or {"empty": torch.zeros(0)}, str(tmp / "penalty.safetensors"))
        if quotes is not None:
            from safetensors.numpy import save_file as save_arrays

            save_arrays(quotes.tensors(), str(tmp / QUOTES_FILE))
        meta["files"] = {name: sha256_file(tmp / name) for name in FILES + OPTIONAL_FILES if (tmp / name).is_file()}
        (tmp / "policy.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
        read_meta(tmp)
        if fit is not None:
            meta["calibration"].update(fit(tmp))
            (tmp / "policy.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
            read_meta(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
