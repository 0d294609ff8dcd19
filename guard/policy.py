"""A compiled guard policy: what `unlearn guard build` writes and every guard loads.

A policy is a self-describing directory:

    policy.json          format + version, build config, package versions, source fingerprints,
                         the tokenizer it was compiled for, targets (names and lexical probes),
                         forget items (question, answer, phrases, targets), calibration figures,
                         and a sha256 for every other file
    index.faiss          all-MiniLM-L6-v2 embeddings of the forget questions (inner product = cosine)
    answers.faiss        the same of the forget answers, row for row (built with `answers: true`, the
                         default, where the items have questions; absent from policies built before)
    sequences.json       forbidden token sequences per item and per target (every variant)
    penalty.safetensors  per-target sparse vocabulary penalty (t<i>.idx, t<i>.val)

`load_policy` checks all of it before anything is served: a missing or altered file, another
format version, or a policy compiled for another tokenizer fails at start-up with the reason.
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
FORMAT_VERSION = 1
FILES = ("index.faiss", "sequences.json", "penalty.safetensors")
OPTIONAL_FILES = ("answers.faiss",)   # checked where policy.json lists them


class PolicyError(UnlearnError):
    """A guard policy cannot be built or loaded; the message says why."""


MODES = ("strict", "calibrated")
MAX_SOFT_MASK = 60.0


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
    if meta.get("format_version") != FORMAT_VERSION:
        raise PolicyError(f"{meta_path}: policy format version {meta.get('format_version')!r}, this unlearnkit "
                          f"reads version {FORMAT_VERSION}; rebuild it with `unlearn guard build`")
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
    answers = faiss.read_index(str(root / "answers.faiss")) if "answers.faiss" in meta["files"] else None
    seqs = json.loads((root / "sequences.json").read_text())
    tensors = load_file(str(root / "penalty.safetensors"))
    n_targets = len(meta["targets"])
    penalties = [(tensors[f"t{i}.idx"], tensors[f"t{i}.val"]) for i in range(n_targets)]
    if index.ntotal != len(meta["items"]) or len(seqs["items"]) != len(meta["items"]) \
            or len(seqs["targets"]) != n_targets or (answers is not None and answers.ntotal != index.ntotal):
        raise PolicyError(f"guard policy {str(root)!r}: index, sequences and items disagree in size")
    return Policy(root, meta, index, seqs["items"], seqs["targets"], penalties, answers)


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
    return "\n".join(lines)

