"""A compiled guard policy: what `unlearn guard build` writes and every guard loads.

A policy is a self-describing directory:

    policy.json          format + version, build config, package versions, source fingerprints,
                         the tokenizer it was compiled for, targets (names and lexical probes),
                         forget items (question, answer, phrases, targets), calibration figures,
                         and a sha256 for every other file
    index.faiss          all-MiniLM-L6-v2 embeddings of the forget questions (inner product = cosine), or
                         its static distillation's where the config says `embedder: static`
    answers.faiss        the same of the forget answers, row for row (built with `answers: true`, the
                         default, where the items have questions; absent from policies built before)
    sequences.json       forbidden token sequences per item and per target (every variant)
    penalty.safetensors  per-target sparse vocabulary penalty (t<i>.idx, t<i>.val)
    quotes.safetensors   a corpus policy's verbatim-quote structure (quotes.py: exact keys/offsets/conts,
                         or Bloom filters grams/prefixes), described by policy.json's "quotes"; format
                         version 2, so that a reader that does not know it refuses the policy rather than
                         serve it without the quote filter

`load_policy` checks all of it before anything is served: a missing or altered file, another
format version, a policy compiled for another tokenizer, or one whose vectors another embedder made
than this installation's (`check_embedder`) fails at start-up with the reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..config import to_dict
from ..errors import UnlearnError
from ..files import sha256_file

FORMAT = "unlearnkit-guard-policy"
FORMAT_VERSION = 2                    # written by policies with a quote filter; those without still write 1
READABLE_VERSIONS = (1, 2)
FILES = ("index.faiss", "sequences.json", "penalty.safetensors")
OPTIONAL_FILES = ("answers.faiss", "quotes.safetensors")   # checked where policy.json lists them
QUOTES_FILE = "quotes.safetensors"


class PolicyError(UnlearnError):
    """A guard policy cannot be built or loaded; the message says why."""


MODES = ("strict", "calibrated")
CORPUS_MODES = ("takedown", "forget")
MAX_SOFT_MASK = 60.0
QUOTE_TOKENS = 12          # τ: a reply holds at most this many consecutive corpus tokens
QUOTE_BUDGET_MB = 512      # the quote structure's memory: exact below it, else Bloom filters
QUOTE_FPR = 1e-4           # the Bloom filters' false-positive rate per lookup
EMBEDDERS = ("minilm", "static")   # embedder.EMBEDDERS (not imported: that module loads torch models)


def _unset():
    return field(default=None, metadata={"omit_if_none": True})


@dataclass
class GuardConfig:
    """How a policy is compiled (YAML: configs/guard/*.yaml; unknown keys are refused)."""

    fpr: float = 0.01                 # false-positive rate the threshold is calibrated to, on retain prompts
    default_threshold: float = 0.75   # cosine threshold when no retain prompts are given (uncalibrated)
    top_k: int = 4                    # forget items retrieved per flagged prompt
    answers: bool = True              # also score prompts against the forget answers (a question that quotes
                                      # a target's facts without its name is nearer the answer than the questions)
    key_words: bool = True            # also forbid the answers' content words, not only names/titles/numbers
    penalty: float = 4.0              # semantic penalty at similarity 1 (logit units); 0 disables it
    penalty_min_sim: float = 0.45     # embedding cosine below which a token is not penalised
    max_retain: int = 3000            # retain prompts used for calibration (evenly spaced sample)
    refusal: str = "I'm sorry, but I can't share information about that."
    # strict (unset): withhold every token that completes a forbidden phrase (secrets). calibrated:
    # lower those tokens by a soft mask instead, fitted at build time (calibrate.py) so that the
    # guarded model prefers the true answers no more than the counterfactual ones (imitates not
    # knowing them). Unset keys stay out of policy.json, so a strict policy's record (and every cache
    # keyed on it) is what it was before calibrated mode existed.
    mode: Optional[str] = _unset()
    soft_mask: Optional[float] = _unset()              # calibrated: a fixed strength (logits) instead of fitting one
    calibration_ratio: Optional[float] = _unset()      # calibrated: median truth ratio P(false)/P(true) to reach (1.0)
    calibration_fraction: Optional[float] = _unset()   # calibrated: share of the forget items fitted on (0.5)
    # calibrated: a data spec of items like the forget set's, with counterfactual answers, that the model
    # never learnt (TOFU-mini: tofu/retain_perturbed); the mask is fitted so the forget items' truth
    # median truth ratio matches the model's own median on these, instead of reaching calibration_ratio
    calibration_reference: Optional[str] = _unset()
    # calibrated: keep the policy's semantic penalty under the mask (true when unset; false for weights
    # that already forgot, where a fixed penalty pushes the ratios past a never-learnt model's)
    calibration_penalty: Optional[bool] = _unset()
    # corpus policies (`--forget text:...`, muse/raw_forget): takedown = the quote filter alone (facts may
    # still be answered); forget = the quote filter and the knowledge guard built from the corpus's passages
    corpus_mode: Optional[str] = _unset()
    quote_tokens: Optional[int] = _unset()        # τ (QUOTE_TOKENS)
    # withhold, after a space in a flagged answer, the first digit of each number its items withhold, so an
    # answer cannot begin one there ("7." of 7.4); unset: on for corpus policies in forget mode, off otherwise
    number_heads: Optional[bool] = _unset()
    quote_budget_mb: Optional[float] = _unset()   # QUOTE_BUDGET_MB
    quote_fpr: Optional[float] = _unset()         # QUOTE_FPR
    # the prompt classifier's sentence embedder: minilm (unset) or static, a model2vec distillation of the same
    # MiniLM (embedder.py; measured in docs/results/classifier-recall.md). A policy is served with its own.
    embedder: Optional[str] = _unset()

    @property
    def corpus(self) -> str:
        return self.corpus_mode or "forget"

    @property
    def tau(self) -> int:
        return QUOTE_TOKENS if self.quote_tokens is None else self.quote_tokens

    @property
    def quote_budget(self) -> int:
        """Bytes."""
        return int((QUOTE_BUDGET_MB if self.quote_budget_mb is None else self.quote_budget_mb) * 2**20)

    @property
    def bloom_fpr(self) -> float:
        return QUOTE_FPR if self.quote_fpr is None else self.quote_fpr

    @property
    def keeps_penalty(self) -> bool:
        return self.calibration_penalty is None or bool(self.calibration_penalty)

    @property
    def calibrated(self) -> bool:
        return self.mode == "calibrated"

    @property
    def ratio(self) -> float:
        return 1.0 if self.calibration_ratio is None else self.calibration_ratio

    @property
    def fraction(self) -> float:
        return 0.5 if self.calibration_fraction is None else self.calibration_fraction

    def validate(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise PolicyError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.soft_mask is not None and not 0.0 <= self.soft_mask <= MAX_SOFT_MASK:
            raise PolicyError(f"soft_mask must be between 0 and {MAX_SOFT_MASK} logits, got {self.soft_mask}")
        if not 0.05 <= self.ratio <= 20.0:
            raise PolicyError(f"calibration_ratio must be between 0.05 and 20, got {self.ratio}")
        if not 0.0 < self.fraction <= 1.0:
            raise PolicyError(f"calibration_fraction must be in (0, 1], got {self.fraction}")
        if self.corpus_mode is not None and self.corpus_mode not in CORPUS_MODES:
            raise PolicyError(f"corpus_mode must be one of {list(CORPUS_MODES)}, got {self.corpus_mode!r}")
        if not 1 <= self.tau <= 256:
            raise PolicyError(f"quote_tokens must be between 1 and 256, got {self.tau}")
        if not 0.0 < self.bloom_fpr < 0.5:
            raise PolicyError(f"quote_fpr must be in (0, 0.5), got {self.bloom_fpr}")
        if self.quote_budget <= 0:
            raise PolicyError(f"quote_budget_mb must be positive, got {self.quote_budget_mb}")
        if self.embedder is not None and self.embedder not in EMBEDDERS:
            raise PolicyError(f"embedder must be one of {list(EMBEDDERS)}, got {self.embedder!r}")

    def as_meta(self) -> dict:
        """The config as policy.json records it (unset calibrated-mode keys left out)."""
        return to_dict(self)




@dataclass
class Policy:
    root: Path
    meta: dict
    index: object                                   # faiss index of the forget questions
    item_sequences: list[list[list[int]]]
    target_sequences: list[list[list[int]]]
    penalties: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    answers: object = None                          # faiss index of the forget answers (row i: item i), if built
    quotes: object = None                           # a corpus policy's QuoteIndex (quotes.py), if built
    number_starts: dict = field(default_factory=dict)   # digit -> the sequences that begin a number with it

    @property
    def config(self) -> GuardConfig:
        return GuardConfig(**self.meta["config"])

    @property
    def soft_mask(self) -> Optional[float]:
        """Logits a calibrated policy takes off each matched token; None: strict (withheld)."""
        if self.meta["config"].get("mode", "strict") != "calibrated":
            return None
        value = self.meta["calibration"]["soft_mask"]   # None only inside `unlearn guard build`, while it is fitted
        return None if value is None else float(value)

    @property
    def threshold(self) -> float:
        return float(self.meta["calibration"]["threshold"])

    @property
    def targets(self) -> list[dict]:
        return self.meta["targets"]

    @property
    def items(self) -> list[dict]:
        return self.meta["items"]


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the vocabulary (token -> id): a policy's token ids are only valid for it."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def read_meta(root: str | Path) -> dict:
    """policy.json after the format checks (cheap: what the front end needs to validate requests)."""
    root = Path(root)
    meta_path = root / "policy.json"
    if not root.is_dir():
        raise PolicyError(f"guard policy {str(root)!r} is not a directory (build one with `unlearn guard build`)")
    if not meta_path.is_file():
        raise PolicyError(f"guard policy {str(root)!r} has no policy.json: not a policy directory, or an "
                          "interrupted build")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{meta_path}: corrupt policy.json ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PolicyError(f"{meta_path}: not a guard policy (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise PolicyError(f"{meta_path}: policy format version {meta.get('format_version')!r}, this unlearnkit "
                          f"reads versions {list(READABLE_VERSIONS)}; rebuild it with `unlearn guard build`")
    if (QUOTES_FILE in meta.get("files", {})) != ("quotes" in meta):
        raise PolicyError(f"{meta_path}: {QUOTES_FILE} and the 'quotes' record must come together; rebuild it")
    for key in ("config", "calibration", "targets", "items", "files", "tokenizer"):
        if key not in meta:
            raise PolicyError(f"{meta_path}: missing {key!r}")
    try:
        GuardConfig(**meta["config"]).validate()
    except TypeError as exc:
        raise PolicyError(f"{meta_path}: bad config ({exc})") from None
    if meta["config"].get("mode") == "calibrated" and "soft_mask" not in meta["calibration"]:
        raise PolicyError(f"{meta_path}: a calibrated policy without its fitted soft_mask; rebuild it")
    return meta


def verified_meta(root: str | Path) -> dict:
    """`read_meta`, and every file of the policy present and matching its checksum in policy.json."""
    root = Path(root)
    meta = read_meta(root)
    for name in FILES + tuple(n for n in OPTIONAL_FILES if n in meta["files"]):
        path = root / name
        if not path.is_file():
            raise PolicyError(f"guard policy {str(root)!r}: {name} is missing")
        if sha256_file(path) != meta["files"].get(name):
            raise PolicyError(f"guard policy {str(root)!r}: {name} does not match its checksum in policy.json "
                              "(corrupt or edited); rebuild the policy")
    return meta


def load_policy(root: str | Path, tokenizer=None) -> Policy:
    """Load and verify a policy; with `tokenizer`, also check it is the one the policy was built for."""
    import faiss
    from safetensors.torch import load_file

    root = Path(root)
    meta = verified_meta(root)
    if tokenizer is not None:
        fp = tokenizer_fingerprint(tokenizer)
        if fp != meta["tokenizer"]["fingerprint"]:
            raise PolicyError(f"guard policy {str(root)!r} was compiled for the tokenizer of "
                              f"{meta['tokenizer'].get('model')!r} (vocabulary {meta['tokenizer']['fingerprint']}), "
                              f"not this model's ({fp}); rebuild it with `unlearn guard build --model ...`")
    index = faiss.read_index(str(root / "index.faiss"))
    check_embedder(meta, index.d if index.ntotal else None)   # served with the embedder it was built with
    quotes = _load_quotes(root, meta)
    answers = faiss.read_index(str(root / "answers.faiss")) if "answers.faiss" in meta["files"] else None
    seqs = json.loads((root / "sequences.json").read_text())
    tensors = load_file(str(root / "penalty.safetensors"))
    n_targets = len(meta["targets"])
    penalties = [(tensors[f"t{i}.idx"], tensors[f"t{i}.val"]) for i in range(n_targets)]
    if index.ntotal != len(meta["items"]) or len(seqs["items"]) != len(meta["items"]) \
            or len(seqs["targets"]) != n_targets or (answers is not None and answers.ntotal != index.ntotal):
        raise PolicyError(f"guard policy {str(root)!r}: index, sequences and items disagree in size")
    return Policy(root, meta, index, seqs["items"], seqs["targets"], penalties, answers, quotes,
                  seqs.get("number_starts", {}))


def check_embedder(meta: dict, index_dim: int | None = None) -> str:
    """The kind of embedder a policy is served with: the one it was built with. Refused (PolicyError) where
    policy.json's config and record disagree, where this installation's static embedder is not the one the
    policy's vectors came from (another MiniLM, model2vec version or setting), or where the index's
    dimension is not the embedder's."""
    from .embedder import embedder_dim, embedder_kind, static_key, static_recipe

    try:
        built = embedder_kind(meta.get("config", {}).get("embedder"))
    except ValueError as exc:
        raise PolicyError(f"guard policy: {exc}") from None
    record = meta.get("embedder") or {}
    recorded = record.get("kind", "minilm")
    if record and recorded != built:
        raise PolicyError(f"guard policy: its config says embedder {built!r} but its vectors were made by "
                          f"{recorded!r}; rebuild it with `unlearn guard build`")
    if built == "static" and record.get("static_key") is not None and record["static_key"] != static_key():
        raise PolicyError(f"guard policy was built with the static embedder {record['static_key']} "
                          f"({record.get('recipe')}), but this installation distils {static_key()} "
                          f"({static_recipe()}); rebuild the policy with `unlearn guard build`")
    if index_dim is not None and index_dim and index_dim != embedder_dim(built):
        raise PolicyError(f"guard policy: its index holds {index_dim}-dimensional vectors, the {built!r} "
                          f"embedder makes {embedder_dim(built)}; rebuild it with `unlearn guard build`")
    return built


def _load_quotes(root: Path, meta: dict):
    """The policy's quote structure (quotes.py), None for a policy without one."""
    if QUOTES_FILE not in meta["files"]:
        return None
    from safetensors.numpy import load_file

    from .quotes import quote_index_from

    try:
        return quote_index_from(load_file(str(root / QUOTES_FILE)), meta["quotes"], int(meta["tokenizer"]["vocab_size"]))
    except (KeyError, TypeError) as exc:
        raise PolicyError(f"guard policy {str(root)!r}: bad quote structure ({exc}); rebuild it") from None


def policy_summary(meta: dict) -> str:
    cal = meta["calibration"]
    lines = [f"targets: {len(meta['targets'])} ({', '.join(t['name'] for t in meta['targets'][:6])}"
             f"{', ...' if len(meta['targets']) > 6 else ''})",
             f"forget items: {len(meta['items'])}, forbidden sequences: {meta.get('n_sequences', '?')}",
             f"threshold: {cal['threshold']:.3f} ({'calibrated on ' + str(cal['n_retain']) + ' retain prompts' if cal.get('calibrated') else 'uncalibrated default'})"]
    for key, label in (("retain_fpr", "retain false-positive rate"), ("forget_recall", "forget questions flagged"),
                       ("paraphrase_recall", "paraphrased questions flagged")):
        if cal.get(key) is not None:
            lines.append(f"{label}: {cal[key]:.4f}")
    if meta["config"].get("mode") == "calibrated" and cal.get("soft_mask") is not None:
        lines.append(f"mode: calibrated, soft mask {cal['soft_mask']:.3f} logits"
                     f"{' over the semantic penalty' if cal.get('semantic_penalty') else ''} (median truth ratio "
                     f"{cal['median_truth_ratio_unguarded']:.3f} unguarded -> {cal['median_truth_ratio']:.3f} on "
                     f"{len(cal['fitted_items'])} fitted items; strict would give {cal['median_truth_ratio_strict']:.3g})")
        if cal.get("held_out_median_truth_ratio") is not None:
            lines.append(f"held-out forget items: median truth ratio {cal['held_out_median_truth_ratio']:.3f}")
    else:
        lines.append("mode: strict (matched tokens withheld)")
    if "quotes" in meta:
        q = meta["quotes"]
        lines.append(f"quote filter ({meta.get('corpus', {}).get('mode', 'forget')}): at most {q['tau']} consecutive corpus "
                     f"tokens; {q['kind']}, {q['n_ngrams']:,} {q['tau'] + 1}-grams of {q['n_tokens']:,} tokens, "
                     f"{q['bytes'] / 2**20:.1f} MiB, false-positive rate {q['fpr']:.3g}")
    return "\n".join(lines)

