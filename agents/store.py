"""The unlearning targets the agent layer knows, and retrieval over them.

Two sources: the guard policy (its targets, forget items and faiss index: fixed, the floor) and
live targets added or removed while the server runs (`/admin/targets`, or by editing the live
targets file, which is re-read when it changes). A live target is a name and optional facts.

Retrieval returns the `k` facts nearest to a text, so the audit/erase/critic prompts hold k facts
whatever the number of targets.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ConfigError
from ..files import write_json_atomic
from ..guard.classifier import Decision, PromptClassifier
from ..guard.embedder import embed
from ..guard.phrases import ProbeIndex, mentions

log = logging.getLogger("unlearnkit.agents")

MAX_NAME = 200
MAX_FACTS = 32


@dataclass(frozen=True)
class Fact:
    text: str                          # what the prompts show ("Q: ... A: ..." or "name: fact")
    names: tuple[str, ...]             # the targets it belongs to
    phrases: tuple[str, ...] = ()      # distinctive phrases whose presence in an answer is a leak
    score: float = 0.0


@dataclass(frozen=True)
class LiveTarget:
    name: str
    facts: tuple[str, ...] = ()

    @property
    def probes(self) -> tuple[str, ...]:
        """The full name, and for several words its last word when it is distinctive (>= 5 letters)."""
        words = self.name.split()
        return (self.name,) + ((words[-1],) if len(words) > 1 and len(words[-1]) >= 5 else ())

    def to_json(self) -> dict:
        return {"name": self.name, "facts": list(self.facts)}


def live_fact(target: LiveTarget, score: float) -> Fact:
    """A live (or request-added) target as a fact for the prompts; without facts, all about it."""
    return Fact(f"{target.name}: {'; '.join(target.facts) or '(everything about this person or thing)'}",
                (target.name,), target.probes, score)


def parse_live_target(data) -> LiveTarget:
    """A JSON object {"name": str, "facts": [str, ...]} -> LiveTarget, or ValueError naming the problem."""
    if not isinstance(data, dict):
        raise ValueError(f"a target must be an object with 'name' (and optional 'facts'), got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "facts"})
    if unknown:
        raise ValueError(f"unknown target field(s) {unknown}; valid: ['name', 'facts']")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise ValueError(f"'name' must be a non-empty string of at most {MAX_NAME} characters")
    facts = data.get("facts", [])
    if isinstance(facts, str):
        facts = [facts]
    if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts) or len(facts) > MAX_FACTS:
        raise ValueError(f"'facts' must be a list of at most {MAX_FACTS} strings")
    return LiveTarget(" ".join(name.split()), tuple(f.strip() for f in facts if f.strip()))


@dataclass
class _Live:
    targets: tuple[LiveTarget, ...] = ()
    vectors: Optional[np.ndarray] = None       # one unit embedding per target (name + facts)
    stamp: tuple = field(default_factory=tuple)

    def __post_init__(self):
        self.probes = ProbeIndex((p, n) for n, t in enumerate(self.targets) for p in t.probes)

    def named(self, text: str) -> list[LiveTarget]:
        return [self.targets[n] for n in sorted(self.probes.find(text))]


class TargetStore:
    """A guard policy's targets plus live ones; thread-safe (snapshots are replaced whole)."""

    def __init__(self, policy, live_file: Optional[str | Path] = None):
        self.policy = policy
        self.classifier = PromptClassifier(policy)
        self.threshold = policy.threshold
        self.live_file = Path(live_file) if live_file else None
        self._lock = threading.Lock()
        self._live = _Live()
        self.reload_errors = 0
        if self.live_file is not None and self.live_file.exists():
            self._live = self._read_live_file(strict=True)

    # ------------------------------------------------------------------ live targets
    def _embed_targets(self, targets: Sequence[LiveTarget]) -> Optional[np.ndarray]:
        if not targets:
            return None
        return embed([". ".join((t.name,) + t.facts) for t in targets])

    def _file_stamp(self) -> tuple:
        try:
            st = os.stat(self.live_file)
            return (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return ()

    def _read_live_file(self, strict: bool) -> _Live:
        stamp = self._file_stamp()
        try:
            data = json.loads(self.live_file.read_text()) if stamp else {"targets": []}
            items = data.get("targets") if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise ValueError("expected {\"targets\": [{\"name\": ..., \"facts\": [...]}, ...]}")
            targets = tuple(parse_live_target(t) for t in items)
        except (ValueError, OSError) as exc:   # JSONDecodeError is a ValueError
            if strict:
                raise ConfigError(f"live targets file {str(self.live_file)!r}: {exc}") from None
            raise
        return _Live(targets, self._embed_targets(targets), stamp)

    def refresh(self) -> None:
        """Re-read the live targets file if it changed (a stat per request). A malformed file is
        logged and counted, and the targets in force stay as they were (never silently dropped)."""
        if self.live_file is None:
            return
        stamp = self._file_stamp()
        if stamp == self._live.stamp:
            return
        with self._lock:
            if stamp == self._live.stamp:
                return
            try:
                self._live = self._read_live_file(strict=False)
                log.info("live targets reloaded from %s: %d", self.live_file, len(self._live.targets))
            except (ValueError, OSError) as exc:
                self.reload_errors += 1
                self._live = _Live(self._live.targets, self._live.vectors, stamp)
                log.error("live targets file %s is malformed (%s); keeping the %d targets in force",
                          self.live_file, exc, len(self._live.targets))

    def policy_names(self) -> list[str]:
        return [t["name"] for t in self.policy.targets]

    def live_targets(self) -> tuple[LiveTarget, ...]:
        return self._live.targets

    def _set_live(self, targets: tuple[LiveTarget, ...], vectors: Optional[np.ndarray]) -> None:
        live = _Live(targets, vectors if targets else None)
        if self.live_file is not None:
            write_json_atomic(self.live_file, {"targets": [t.to_json() for t in targets]})
            live.stamp = self._file_stamp()
        self._live = live

    def _keep(self, drop: str) -> tuple[tuple[LiveTarget, ...], Optional[np.ndarray]]:
        """The live targets and their vectors without `drop` (case-insensitive)."""
        rows = [n for n, t in enumerate(self._live.targets) if t.name.lower() != drop.lower()]
        vectors = self._live.vectors[rows] if rows and self._live.vectors is not None else None
        return tuple(self._live.targets[n] for n in rows), vectors

    def add(self, target: LiveTarget) -> bool:
        """Add (or replace the facts of) a live target; False when it is already a policy target."""
        if target.name.lower() in {n.lower() for n in self.policy_names()}:
            return False
        vector = self._embed_targets([target])
        with self._lock:
            kept, vectors = self._keep(target.name)
            self._set_live(kept + (target,), vector if vectors is None else np.vstack([vectors, vector]))
            return True

    def remove(self, name: str) -> bool:
        with self._lock:
            kept, vectors = self._keep(name.strip())
            if len(kept) == len(self._live.targets):
                return False
            self._set_live(kept, vectors)
            return True

    # ------------------------------------------------------------------ per request
    def classify(self, whole: str, segments: list[str], threshold: Optional[float] = None,
                 extra_names: Sequence[str] = ()) -> Decision:
        """The policy classifier's decision, then the live targets' (named, or similar enough)."""
        decision = self.classifier.classify([(whole, segments)], threshold)[0]
        if decision.flagged:
            return decision
        named = [n for n in extra_names if mentions(whole, [n])]
        if named:
            return Decision(True, float("nan"), f"names request target(s) {', '.join(named)}")
        live = self._live
        hits = [t.name for t in live.named(whole)]
        if hits:
            return Decision(True, float("nan"), f"names live target(s) {', '.join(hits)}")
        threshold = self.threshold if threshold is None else threshold
        if live.vectors is not None:   # the same texts the policy classifier embedded (cached)
            queries = [segments[-1]] + (["\n".join(segments)] if len(segments) > 1 else [])
            score = float((embed(queries) @ live.vectors.T).max())
            if score >= threshold:
                return Decision(True, score, f"similarity {score:.3f} to a live target >= {threshold:.3f}")
        return decision

    def live_names_for(self, texts: Sequence[str], limit: int) -> list[str]:
        """At most `limit` live target names, for a guarded engine's token filter: all of them when
        they fit, else the ones `texts` name first, then the nearest to them (embedding similarity)."""
        live = self._live
        if len(live.targets) <= limit:
            return [t.name for t in live.targets]
        texts = [t for t in texts if t and t.strip()] or [""]
        named = [t.name for t in live.named("\n".join(texts))]
        nearest = np.argsort(-(embed(texts) @ live.vectors.T).max(0), kind="stable")
        return list(dict.fromkeys(named + [live.targets[n].name for n in nearest]))[:limit]

    def retrieve(self, texts: Sequence[str], k: int, min_score: Optional[float] = None) -> list[Fact]:
        """At most k facts near any of `texts` (a question, a draft): named targets' facts first, then
        those at least `min_score` (default: the classifier threshold) similar; at least the nearest
        one. Unrelated targets' facts stay out of the prompts."""
        texts = [t for t in texts if t and t.strip()]
        if not texts:
            return []
        joined = "\n".join(texts)
        vectors = embed(texts)
        scored: dict[str, Fact] = {}
        sims, idx = self.policy.index.search(vectors, min(k, self.policy.index.ntotal))
        named = sorted({i for t in self.classifier.named(joined) for i in self.classifier.target_items[t]})
        if named:   # a named target's own items rank first, the most relevant of them first
            relevance = (vectors @ np.stack([self.policy.index.reconstruct(i) for i in named]).T).max(0)
            for i, s in zip(named, relevance):
                scored[f"p{i}"] = self._policy_fact(i, 1.0 + float(s))
        for row in range(len(texts)):
            for s, i in zip(sims[row], idx[row]):
                if i >= 0 and f"p{i}" not in scored:
                    scored[f"p{i}"] = self._policy_fact(int(i), float(s))
        live = self._live
        if live.vectors is not None:
            live_sims = (vectors @ live.vectors.T).max(0)
            live_named = {t.name for t in live.named(joined)}
            for n in np.argsort(-live_sims)[:k]:   # the k nearest, then the named ones
                scored[f"l{n}"] = live_fact(live.targets[n], float(live_sims[n]))
            for n, t in enumerate(live.targets):
                if t.name in live_named:
                    scored[f"l{n}"] = live_fact(t, 2.0)
        ranked = sorted(scored.values(), key=lambda f: -f.score)[:k]
        floor = self.threshold if min_score is None else min_score
        return ranked[:1] + [f for f in ranked[1:] if f.score >= floor]

    def _policy_fact(self, i: int, score: float) -> Fact:
        item = self.policy.items[i]
        targets = [self.policy.targets[t] for t in item["targets"]]
        phrases = tuple(p for t in targets for p in t.get("phrases", [t["name"]]))
        return Fact(f"Q: {item['question']} A: {item['answer']}", tuple(t["name"] for t in targets), phrases, score)

    def names_in(self, text: str, facts: Sequence[Fact] = ()) -> list[str]:
        """Target names (any policy or live target's, or a phrase of the given facts) found in `text`:
        an answer containing one is a leak, whatever the model says."""
        found = [self.policy.targets[t]["name"] for t in sorted(self.classifier.named(text))]
        found += [t.name for t in self._live.named(text)]
        found += [p for f in facts for p in f.phrases if len(p) >= 4 and mentions(text, [p])]
        return sorted(set(found))
