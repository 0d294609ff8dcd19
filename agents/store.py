"""The unlearning targets the agent layer knows, and retrieval over them.

Two sources: the guard policy (its targets, forget items and faiss index: fixed, the floor) and
live targets added or removed while the server runs (`/admin/targets`, or by editing the live
targets file, which is re-read when it changes). A live target is a name and optional facts.

The live targets file is the replicas' shared store (several fronts behind a load balancer name the
same file on a shared disk):
  - a change is made under an exclusive lock on `<file>.lock` (flock), on the file as it is on disk
    then (re-read under the lock: two replicas' concurrent changes both land), and written whole:
    a temporary file beside it, fsync, os.replace, fsync of the directory. A reader sees the old or
    the new file, never half of one, and a change acknowledged (201) survives a crash;
  - every replica checks it before each request: a stat (inode, size, mtime, ctime), and at least
    every `recheck_s` seconds a read and sha256 of its bytes (a rewrite the stat cannot tell apart
    is still seen). A change made on one replica is enforced by the others from their next request,
    and at most `recheck_s` later whatever the file system's timestamps do;
  - a file that is gone after it existed, unreadable, or malformed makes the store *degraded*: the
    targets in force stay as they were (never silently dropped), `degraded` says why, and the front
    refuses flagged requests (503) and reports it on /health until the file reads again.

Retrieval returns the `k` facts nearest to a text, so the audit/erase/critic prompts hold k facts
whatever the number of targets.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ConfigError
from ..guard.classifier import CollapsedIndex, Decision, PromptClassifier, collapsed_names, lexical_hits
from ..guard.embedder import embed
from ..guard.phrases import ProbeIndex, mentions

log = logging.getLogger("unlearnkit.agents")

MAX_NAME = 200
MAX_FACTS = 32
RECHECK_S = 1.0      # the longest a replica goes without reading the live targets file's bytes


class StoreUnavailable(RuntimeError):
    """The shared live targets file cannot be read (gone, unreadable, malformed): a change is refused."""


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


def target_text(target: LiveTarget) -> str:
    """What a live target's embedding is computed from."""
    return ". ".join((target.name,) + target.facts)


@dataclass
class _Live:
    targets: tuple[LiveTarget, ...] = ()
    vectors: Optional[np.ndarray] = None       # one unit embedding per target (name + facts)
    stamp: tuple = field(default_factory=tuple)
    digest: str = ""                           # sha256 of the file's bytes it was read from
    version: int = 0                           # the file's change counter

    def __post_init__(self):
        self.probes = ProbeIndex((p, n) for n, t in enumerate(self.targets) for p in t.probes)
        self.collapsed = CollapsedIndex(collapsed_names([{"probes": list(t.probes)} for t in self.targets]))

    def vector_of(self) -> dict[str, np.ndarray]:
        if self.vectors is None:
            return {}
        return {target_text(t): v for t, v in zip(self.targets, self.vectors)}

    def named(self, text: str) -> list[LiveTarget]:
        """The live targets `text` names, as the policy's are found: in any lexical view (folded, so
        homoglyphs and zero-width characters; de-leeted; spaced letters joined; backwards)."""
        return [self.targets[n] for n in sorted(lexical_hits(text, self.probes, self.collapsed))]


def read_live_bytes(raw: bytes) -> tuple[tuple[LiveTarget, ...], int]:
    """The live targets file's bytes -> (targets, version), or ValueError naming the problem."""
    data = json.loads(raw.decode("utf-8")) if raw.strip() else None   # JSONDecodeError is a ValueError
    items = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError('expected {"version": int, "targets": [{"name": ..., "facts": [...]}, ...]}')
    version = data.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"'version' must be an integer, got {version!r}")
    return tuple(parse_live_target(t) for t in items), version


def write_durable(path: Path, data) -> None:
    """Write JSON so that a crash leaves the old file or the new one, and the new one once this
    returns: a temporary file in the same directory, fsync, os.replace, fsync of the directory."""
    mode = os.stat(path).st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(json.dumps(data, indent=1))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class TargetStore:
    """A guard policy's targets plus live ones; thread-safe (snapshots are replaced whole)."""

    def __init__(self, policy, live_file: Optional[str | Path] = None, recheck_s: float = RECHECK_S):
        self.policy = policy
        self.classifier = PromptClassifier(policy)
        self.threshold = policy.threshold
        self.live_file = Path(live_file) if live_file else None
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._live = _Live()
        self.reload_errors = 0
        self.degraded: Optional[str] = None      # why the shared file cannot be read; None when it can
        self._checked = ((), 0.0)                # (stamp, monotonic time) of the last look at the file
        if self.live_file is not None:
            self.live_file.parent.mkdir(parents=True, exist_ok=True)
            with self._file_lock():
                if not self.live_file.exists():   # the first replica to start creates it
                    log.warning("live targets file %s does not exist; starting it empty", self.live_file)
                    write_durable(self.live_file, {"version": 0, "targets": []})
                try:
                    self._live = self._read_live_file()
                except (ValueError, OSError) as exc:
                    raise ConfigError(f"live targets file {str(self.live_file)!r}: {exc}") from None
            self._checked = (self._live.stamp, time.monotonic())

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings in the policy index's space (the embedder the policy was built with)."""
        return embed(list(texts), embedder=self.classifier.embedder)

    # ------------------------------------------------------------------ live targets
    def _embed_targets(self, targets: Sequence[LiveTarget], known: Optional[dict] = None) -> Optional[np.ndarray]:
        """One embedding per target; those in `known` (text -> vector) are not computed again."""
        if not targets:
            return None
        known = dict(known or {})
        missing = list(dict.fromkeys(target_text(t) for t in targets if target_text(t) not in known))
        if missing:
            known.update(zip(missing, self._embed(missing)))
        return np.stack([known[target_text(t)] for t in targets])

    def _file_stamp(self) -> tuple:
        """(inode, size, mtime, ctime) of the live file; () when it does not exist."""
        try:
            st = os.stat(self.live_file)
            return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except FileNotFoundError:
            return ()

    @contextmanager
    def _file_lock(self):
        """Exclusive among this store's threads and every process (replica) using the same file."""
        with self._lock, open(f"{self.live_file}.lock", "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _read_live_file(self) -> _Live:
        """The file as it is now; FileNotFoundError, OSError or ValueError when it cannot be used."""
        stamp = self._file_stamp()
        if not stamp:
            raise FileNotFoundError(f"{self.live_file} is gone")
        raw = self.live_file.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        current = self._live
        if digest == current.digest:
            return replace(current, stamp=stamp)
        targets, version = read_live_bytes(raw)
        return _Live(targets, self._embed_targets(targets, current.vector_of()), stamp, digest, version)

    def _degrade(self, why: str) -> None:
        if self.degraded != why:
            log.error("live targets store degraded: %s; keeping the %d targets in force and refusing flagged "
                      "requests until it reads again", why, len(self._live.targets))
        self.degraded = why

    def refresh(self) -> None:
        """Bring the live targets up to date with the shared file: a stat per call, and its bytes when
        the stat changed or `recheck_s` passed. A file that cannot be used degrades the store (the
        targets in force stay; `degraded` says why) until it can be used again."""
        if self.live_file is None:
            return
        stamp = self._file_stamp()
        seen, when = self._checked
        if stamp == seen and time.monotonic() - when < self.recheck_s:
            return
        with self._lock:
            seen, when = self._checked
            if stamp == seen and time.monotonic() - when < self.recheck_s:
                return
            try:
                live = self._read_live_file()
            except FileNotFoundError:
                self._degrade(f"the live targets file {self.live_file} is gone")
            except OSError as exc:
                self._degrade(f"the live targets file {self.live_file} cannot be read ({exc.strerror or exc})")
            except ValueError as exc:
                self.reload_errors += stamp != seen
                self._degrade(f"the live targets file {self.live_file} is malformed ({exc})")
            else:
                if live.digest != self._live.digest:
                    log.info("live targets reloaded from %s: %d (version %d)", self.live_file,
                             len(live.targets), live.version)
                if self.degraded:
                    log.warning("live targets store readable again: %s", self.live_file)
                self._live, self.degraded = live, None
            self._checked = (stamp, time.monotonic())

    @property
    def version(self) -> int:
        return self._live.version

    def policy_names(self) -> list[str]:
        return [t["name"] for t in self.policy.targets]

    def live_targets(self) -> tuple[LiveTarget, ...]:
        return self._live.targets

    def _change(self, change, known: Optional[dict] = None) -> bool:
        """Apply `change(targets) -> new targets, or None for no change` to the live targets as they
        are in the shared file now (under its lock), and write the result durably before returning.
        StoreUnavailable when the file cannot be read: a change is never made on a stale copy."""
        if self.live_file is None:
            with self._lock:
                targets = change(self._live.targets)
                if targets is None:
                    return False
                self._live = _Live(targets, self._embed_targets(targets, {**self._live.vector_of(), **(known or {})}))
                return True
        with self._file_lock():
            try:
                current = self._read_live_file()
            except (ValueError, OSError) as exc:
                self._degrade(f"the live targets file {self.live_file} cannot be used ({exc})")
                raise StoreUnavailable(f"the live targets store cannot be read ({type(exc).__name__}); "
                                       "no change was made") from None
            self._live, self.degraded = current, None
            targets = change(current.targets)
            if targets is None:
                return False
            version = current.version + 1
            write_durable(self.live_file, {"version": version, "targets": [t.to_json() for t in targets]})
            raw = self.live_file.read_bytes()
            vectors = self._embed_targets(targets, {**current.vector_of(), **(known or {})})
            self._live = _Live(targets, vectors, self._file_stamp(),
                               hashlib.sha256(raw).hexdigest(), version)
            self._checked = (self._live.stamp, time.monotonic())
            return True

    def add(self, target: LiveTarget) -> bool:
        """Add (or replace the facts of) a live target; False when it is already a policy target."""
        if target.name.lower() in {n.lower() for n in self.policy_names()}:
            return False
        known = {target_text(target): self._embed_targets([target])[0]}   # embedded outside the file lock

        def added(targets):
            return tuple(t for t in targets if t.name.lower() != target.name.lower()) + (target,)
        return self._change(added, known)

    def remove(self, name: str) -> bool:
        drop = name.strip().lower()

        def removed(targets):
            kept = tuple(t for t in targets if t.name.lower() != drop)
            return kept if len(kept) < len(targets) else None
        return self._change(removed)

    # ------------------------------------------------------------------ per request
    def classify(self, whole: str, segments: list[str], threshold: Optional[float] = None,
                 extra_names: Sequence[str] = ()) -> Decision:
        """The policy classifier's decision, then the live targets' (named, or similar enough)."""
        return self.classify_source(whole, segments, threshold, extra_names)[0]

    def classify_source(self, whole: str, segments: list[str], threshold: Optional[float] = None,
                        extra_names: Sequence[str] = ()) -> tuple[Decision, Optional[str]]:
        """`classify`'s decision and what flagged it: "policy", "request" (the request's own
        targets), "live", or None when not flagged."""
        decision = self.classifier.classify([(whole, segments)], threshold)[0]
        if decision.flagged:
            return decision, "policy"
        named = [n for n in extra_names if mentions(whole, [n])]
        if named:
            return Decision(True, float("nan"), f"names request target(s) {', '.join(named)}"), "request"
        live = self._live
        hits = [t.name for t in live.named(whole)]
        if hits:
            return Decision(True, float("nan"), f"names live target(s) {', '.join(hits)}"), "live"
        threshold = self.threshold if threshold is None else threshold
        if live.vectors is not None:   # the same texts the policy classifier embedded (cached)
            queries = [segments[-1]] + (["\n".join(segments)] if len(segments) > 1 else [])
            score = float((self._embed(queries) @ live.vectors.T).max())
            if score >= threshold:
                return Decision(True, score, f"similarity {score:.3f} to a live target >= {threshold:.3f}"), "live"
        return decision, None

    def live_names_for(self, texts: Sequence[str], limit: int) -> list[str]:
        """At most `limit` live target names, for a guarded engine's token filter: all of them when
        they fit, else the ones `texts` name first, then the nearest to them (embedding similarity)."""
        live = self._live
        if len(live.targets) <= limit:
            return [t.name for t in live.targets]
        texts = [t for t in texts if t and t.strip()] or [""]
        named = [t.name for t in live.named("\n".join(texts))]
        nearest = np.argsort(-(self._embed(texts) @ live.vectors.T).max(0), kind="stable")
        return list(dict.fromkeys(named + [live.targets[n].name for n in nearest]))[:limit]

    def retrieve(self, texts: Sequence[str], k: int, min_score: Optional[float] = None) -> list[Fact]:
        """At most k facts near any of `texts` (a question, a draft): named targets' facts first, then
        those at least `min_score` (default: the classifier threshold) similar; at least the nearest
        one. Unrelated targets' facts stay out of the prompts."""
        texts = [t for t in texts if t and t.strip()]
        if not texts:
            return []
        joined = "\n".join(texts)
        vectors = self._embed(texts)
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
