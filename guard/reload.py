"""A served policy replaced on disk is taken up without a restart.

`unlearn guard build --out DIR` replaces a policy directory whole (written beside it, then renamed into
place), so a deletion request that arrives while the server runs is: rebuild the policy over every
forget set so far into the served directory. The engine's guard and the front end's request checks
watch that directory:

    check      at most every `period` seconds, stat the policy's four files: (inode, mtime, size) changed?
    load       the new policy loaded and verified (checksums, tokenizer) in a background thread; the old
               one stays in force meanwhile. A load during which the files changed again is discarded
               and retried (never a mix of two builds)
    swap       the next batch of admitted requests is classified by the new one; requests already
               decoding keep the guards they were given
    failure    a directory that is missing (mid-rename) keeps the old policy; one that does not load is
               logged as an error each time it is tried: a policy error (bad checksum, another tokenizer)
               is not tried again until the files change, any other error at the next period

Both policies are in memory while the new one loads. The load runs in a thread, but its Python work
holds the interpreter lock part of the time: on a 2-core CPU the engine's steps slow down while it runs
(a few seconds for a TOFU-sized policy), they do not stop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Generic, Optional, TypeVar

from .policy import FILES, PolicyError

log = logging.getLogger("unlearnkit.guard")

T = TypeVar("T")
PERIOD_S = 2.0


def signature(root: str | Path) -> Optional[tuple]:
    """What changes when any file of a policy directory is replaced: each file's inode, mtime and size
    (None: no policy.json there, e.g. mid-rename)."""
    out = []
    for name in ("policy.json", *FILES):
        try:
            st = os.stat(Path(root) / name)
        except OSError:
            if name == "policy.json":
                return None
            out.append((name, None))
            continue
        out.append((name, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class PolicyWatch(Generic[T]):
    """The value `load()` makes of the policy at `root` (a guard runtime, the policy's metadata), made again
    when the directory is replaced. `get()` is what callers use: cheap, and never waits for a load
    (`background=False` loads in the caller's thread: the front end's metadata, tests). `sig` is the
    signature the `current` value was loaded at (take it before loading, so a replacement during the first
    load is not missed)."""

    def __init__(self, root: str | Path, load: Callable[[], T], current: T, sig: Optional[tuple],
                 period: float = PERIOD_S, background: bool = True, clock: Callable[[], float] = time.monotonic):
        self.root, self._load, self.period, self.background, self._clock = Path(root), load, period, background, clock
        self._current, self._sig = current, sig
        self._checked = clock()
        self._lock = threading.Lock()
        self._ready: Optional[tuple[tuple, T]] = None       # a finished load, not swapped in yet
        self._loading: Optional[threading.Thread] = None
        self.reloads = 0

    def get(self) -> T:
        self._swap()
        now = self._clock()
        if now - self._checked >= self.period:
            self._checked = now
            self._check()
            self._swap()
        return self._current

    def _swap(self) -> None:
        with self._lock:
            if self._ready is not None:
                (self._sig, self._current), self._ready = self._ready, None
                self.reloads += 1

    def _check(self) -> None:
        sig = signature(self.root)
        with self._lock:
            busy = self._loading is not None and self._loading.is_alive()
            if sig is None or sig == self._sig or busy or self._ready is not None:
                return
        if self.background:
            self._loading = threading.Thread(target=self._reload, args=(sig,), name="unlearn-policy-reload",
                                             daemon=True)
            self._loading.start()
        else:
            self._reload(sig)

    def _reload(self, sig: tuple) -> None:
        try:
            value = self._load()
        except PolicyError as exc:   # deterministic: tried again when the files change
            self._failed(sig, exc)
            return
        except Exception as exc:  # noqa: BLE001 - perhaps passing (memory): tried again next period
            self._failed(None, exc)
            return
        if signature(self.root) != sig:     # replaced again while loading: this load may mix two builds
            log.info("unlearning guard: the policy at %s changed while it loaded; loading it again", self.root)
            return
        with self._lock:
            self._ready = (sig, value)
        log.info("unlearning guard: policy %s reloaded", self.root)

    def _failed(self, sig: Optional[tuple], exc: Exception) -> None:
        log.error("unlearning guard: the policy at %s changed but does not load (%s: %s); the previous policy "
                  "stays in force", self.root, type(exc).__name__, exc)
        if sig is not None:
            with self._lock:
                self._sig = sig

    def wait(self, timeout: Optional[float] = None) -> None:
        """Until a background load in progress has finished (tests, shutdown)."""
        if self._loading is not None:
            self._loading.join(timeout)
