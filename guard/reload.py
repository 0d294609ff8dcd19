"""A served policy replaced on disk is taken up without a restart.

`unlearn guard build --out DIR` replaces a policy directory whole (written beside it, then renamed into
place), so a deletion request that arrives while the server runs is: rebuild the policy over every
forget set so far into the served directory. The engine's guard and the front end's request checks
watch that directory:

    check      at most every `period` seconds, stat DIR/policy.json: (inode, mtime, size) changed?
    load       the new policy loaded and verified (checksums, tokenizer) in a background thread, so
               decoding never waits for it; the old one stays in force meanwhile
    swap       the next batch of admitted requests is classified by the new one; requests already
               decoding keep the guards they were given
    failure    a directory that is missing (mid-rename) or fails to load leaves the old policy in
               force (logged as an error; retried when policy.json changes again)

Both policies are in memory while the new one loads (about twice a policy's size for a moment).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Generic, Optional, TypeVar

log = logging.getLogger("unlearnkit.guard")

T = TypeVar("T")
PERIOD_S = 2.0


def signature(root: str | Path) -> Optional[tuple]:
    """What changes when a policy directory is replaced: policy.json's inode, mtime and size (None: absent)."""
    try:
        st = os.stat(Path(root) / "policy.json")
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class PolicyWatch(Generic[T]):
    """The value `load()` makes of the policy at `root` (a guard runtime, the policy's metadata), made again
    when the directory is replaced. `get()` is what callers use: cheap, and never blocks on a load
    (`background=False` loads in the caller's thread: the front end's metadata, tests)."""

    def __init__(self, root: str | Path, load: Callable[[], T], current: T, period: float = PERIOD_S,
                 background: bool = True, clock: Callable[[], float] = time.monotonic):
        self.root, self._load, self.period, self.background, self._clock = Path(root), load, period, background, clock
        self._current, self._sig = current, signature(root)
        self._checked = clock()
        self._lock = threading.Lock()
        self._ready: Optional[tuple[tuple, T]] = None
        self._loading: Optional[threading.Thread] = None
        self.reloads = 0

    def get(self) -> T:
        now = self._clock()
        if now - self._checked >= self.period:
            self._checked = now
            self._check()
        with self._lock:
            if self._ready is not None:
                (self._sig, self._current), self._ready = self._ready, None
                self.reloads += 1
        return self._current

    def _check(self) -> None:
        sig = signature(self.root)
        if sig is None or sig == self._sig or (self._loading is not None and self._loading.is_alive()):
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
        except Exception as exc:  # noqa: BLE001 - the old policy stays in force; never a dead engine
            log.error("unlearning guard: the policy at %s changed but does not load (%s: %s); the previous "
                      "policy stays in force", self.root, type(exc).__name__, exc)
            self._sig = sig          # not retried until policy.json changes again
            return
        with self._lock:
            self._ready = (sig, value)
        log.info("unlearning guard: policy %s reloaded", self.root)

    def wait(self, timeout: Optional[float] = None) -> None:
        """Until a background load in progress has finished (tests, shutdown)."""
        if self._loading is not None:
            self._loading.join(timeout)
