"""Per-request decode-time guard state and the batch of slots the V1 adapter drives.

Each flagged request owns a `RequestGuard`: its trie and live match nodes, the same phrases as a
character-level matcher and its state, how many output tokens it has consumed, and an optional
additive penalty over the vocabulary. A request whose classifier
failed owns a guard that *forces* a refusal instead (fail closed). `GuardSlots` maps batch slots to
guards with the operations vLLM's persistent batch performs (add, remove, move, swap) and applies
all of them to a [rows, vocab] logits tensor (`guard_rows`: rows whose guards share structures and
match states, such as the always-on names checks of unflagged requests, are written together).
Unflagged requests whose output does not start a target's name decode exactly as without the guard.
A corpus policy's quote filter (quotes.py) rides on every request's guard, flagged or not: the tokens
that would make its last τ+1 tokens a corpus n-gram are withheld, for all rows of a step in one
lookup and one write (`withhold_quotes`). Plain torch; no vLLM here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from .quotes import QuoteState
from .textmatch import TextMatcher
from .trie import TokenTrie
from .withheld import Withheld

BLOCKED = float("-inf")


@dataclass(frozen=True)
class Refusal:
    """The policy's refusal as tokens: at the answer's start, and after some of it (set apart from the
    word the model had begun, so the begun word and the refusal do not read as one)."""

    opening: list[int]
    later: list[int]


@dataclass
class RequestGuard:
    trie: TokenTrie
    penalty: Optional[torch.Tensor] = None      # [vocab], added to the logits (<= 0 where discouraged)
    forced: Optional[list[int]] = None          # fail closed: decode exactly these tokens, then stop
    text: Optional[TextMatcher] = None          # the same phrases matched on characters
    live: frozenset = field(default_factory=frozenset)
    text_state: int = -1                        # -1: the matcher's start state
    consumed: int = 0
    spelled: Optional[TextMatcher] = None       # full names matched letter by letter, whatever separates them
    spelled_state: int = -1
    extra: Optional[TextMatcher] = None         # the request's own phrases (unlearn_targets), apart from the cached `text`
    extra_state: int = -1
    fallback: Optional[int] = None              # the token to force when the guard leaves no token (end of sequence)
    always_on: bool = False                     # the names check every unflagged request gets
    soft: Optional[float] = None                # calibrated mode: matched tokens lose this many logits instead of being withheld
    withheld: Optional[Withheld] = None         # calibrated mode: the names the prompt did not write, withheld
    quotes: Optional[QuoteState] = None         # a corpus policy's quote filter: the request's last τ tokens
    refusal: Optional["Refusal"] = None         # strict mode: forced once the model heads into a withheld name
    forced_from: int = 0                        # the output token the forced tokens start at
    _penalty_entries: Optional[tuple] = field(default=None, repr=False, compare=False)   # (key, index, values)

    def __post_init__(self):
        if self.text is not None and self.text_state < 0:
            self.text_state = self.text.start
        if self.spelled is not None and self.spelled_state < 0:
            self.spelled_state = self.spelled.start
        if self.extra is not None and self.extra_state < 0:
            self.extra_state = self.extra.start

    def feed(self, new_tokens: Sequence[int]) -> None:
        """Advance over newly generated tokens."""
        for tok in new_tokens:
            self.live = self.trie.advance(self.live, int(tok))
        self._advance_text(new_tokens)
        if self.quotes is not None:
            self.quotes.feed(new_tokens)
        self.consumed += len(new_tokens)

    def _advance_text(self, tokens: Sequence[int]) -> None:
        if self.text is not None:
            self.text_state = self.text.advance_tokens(self.text_state, tokens)
        if self.spelled is not None:
            self.spelled_state = self.spelled.advance_tokens(self.spelled_state, tokens)
        if self.extra is not None:
            self.extra_state = self.extra.advance_tokens(self.extra_state, tokens)
        if self.withheld is not None:
            self.withheld.advance(tokens)

    def matchers(self) -> list:
        """The guard's character-level matchers (each with `texts` and `longest`)."""
        own = [m for m in (self.text, self.spelled, self.extra) if m is not None]
        return own + (list(self.withheld.matchers) if self.withheld is not None else [])

    def prime(self, context: Sequence[int], text_context: Optional[Sequence[int]] = None) -> None:
        """Read the end of the prompt before any output (not counted as consumed output): a
        phrase the prompt has begun can then not be completed by the response. `text_context`: what the
        character-level matchers read instead of `context` (runtime.prime_window)."""
        for tok in context:
            self.live = self.trie.advance(self.live, int(tok))
        self._advance_text(context if text_context is None else text_context)

    def inside_name(self) -> bool:
        """Whether the text so far ends inside one of the guard's phrases (a name begun): only there can
        withholding a token turn the model's answer into a near miss of the name."""
        return bool(self.live) or any(not m.idle(at) for m, at in (
            (self.text, self.text_state), (self.spelled, self.spelled_state), (self.extra, self.extra_state))
            if m is not None)

    def refuse_from_here(self) -> None:
        """Answer the rest with the refusal: what the model was about to write is withheld, and what it
        would write instead is a near miss of the name (a mangled name reads as a malfunction, not as
        not knowing)."""
        self.forced = self.refusal.opening if self.consumed == 0 else self.refusal.later
        self.forced_from = self.consumed

    def observe(self, output_ids: Sequence[int]) -> None:
        """Advance over output tokens not seen yet (vLLM V1 appends to the same list)."""
        if len(output_ids) > self.consumed:
            self.feed(output_ids[self.consumed:])

    @property
    def strict(self) -> bool:
        """Whether the guard withholds the tokens its phrases complete (not a forced refusal, not
        calibrated mode, which lowers them)."""
        return self.forced is None and self.soft is None and self.withheld is None

    def state_key(self) -> tuple:
        """What the guard's writes in a row depend on, unless forced: its structures (compared by identity:
        the runtime shares them between requests) and its states in them; in calibrated mode the mask and the
        names check less the request's own names, in its states. Rows with one key are written together
        (`guard_rows`)."""
        key = (self.trie, self.text, self.spelled, self.extra, self.live, self.text_state, self.spelled_state,
               self.extra_state)
        if self.strict:
            return key
        names = self.withheld
        return key + (self.soft, None if names is None else (names.trie, *names.matchers, names.live, *names.states))

    def blocked_indexes(self, device) -> list[torch.Tensor]:
        """Index tensors of the tokens `apply_row` withholds here (no draft tokens): all the phrases' in
        strict mode; in calibrated mode the request's own targets' and the names it did not write."""
        if self.strict:
            return self.withheld_indexes(device)
        out = [] if self.extra is None else [self.extra.blocked_index(self.extra_state, device)]
        return out + ([] if self.withheld is None else self.withheld.indexes(device))

    def lowered_indexes(self, device) -> list[torch.Tensor]:
        """Index tensors of the tokens calibrated mode lowers by `soft` here (none in strict mode)."""
        return [] if self.soft is None else self.policy_matches(device)

    def withheld_indexes(self, device, extra: Sequence[int] = ()) -> list[torch.Tensor]:
        """A strict guard's withheld tokens here, as the index tensors of its structures: the policy's
        phrases, names spelled letter by letter, the request's own targets; `extra` as in apply_row."""
        out = self.policy_matches(device, extra)
        for matcher, at in ((self.spelled, self.spelled_state), (self.extra, self.extra_state)):
            if matcher is not None:
                out.append(matcher.blocked_index(_state(matcher, at, extra), device))
        return out

    def blocked(self, live: Optional[frozenset] = None) -> list[int]:
        return sorted(self.trie.blocked(self.live if live is None else live))

    def policy_matches(self, device, extra: Sequence[int] = ()) -> list[torch.Tensor]:
        """Indexes of the tokens that would complete one of the policy's phrases here (withheld in
        strict mode, lowered by `soft` in calibrated mode); `extra` as in apply_row."""
        live = self.live
        for tok in extra:
            live = self.trie.advance(live, int(tok))
        out = [self.trie.blocked_index(live, device)]
        if self.text is not None:
            out.append(self.text.blocked_index(_state(self.text, self.text_state, extra), device))
        if self.soft is not None and self.spelled is not None:   # calibrated: the names, however written, too
            out.append(self.spelled.blocked_index(_state(self.spelled, self.spelled_state, extra), device))
        return out

    def _sparse_penalty(self, width: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The penalty's non-zero entries below `width` (a few hundred of a 49k vocabulary: adding them
        costs a fraction of adding the dense row), found once per request."""
        key = (width, device, dtype)
        if self._penalty_entries is None or self._penalty_entries[0] != key:
            dense = self.penalty.to(device)[:width]
            index = dense.nonzero().squeeze(1)
            self._penalty_entries = (key, index, dense[index].to(dtype))
        return self._penalty_entries[1], self._penalty_entries[2]

    def apply_row(self, row: torch.Tensor, extra: Sequence[int] = ()) -> None:
        """Guard one row of logits in place. `extra` are tokens after the committed ones (draft
        tokens under speculative decoding) that this row's context also contains."""
        if self.forced is not None:
            at = min(self.consumed - self.forced_from + len(extra), len(self.forced) - 1)
            row.fill_(BLOCKED)
            row[self.forced[at]] = 0.0
            return
        width = row.shape[-1]   # the model's vocabulary can be wider (or narrower) than the tokenizer's
        if self.penalty is not None:
            index, values = self._sparse_penalty(width, row.device, row.dtype)
            row.index_add_(0, index, values)
        if self.soft is None:
            blocked = any([_block(row, index, width) for index in self.withheld_indexes(row.device, extra)])
        else:
            # calibrated: the policy's phrases (the spelled names among them) lowered, the request's own targets
            # withheld, and, through `withheld`, the names its prompt did not write
            _discourage(row, self.policy_matches(row.device, extra), self.soft, width)
            blocked = self.extra is not None and _block(
                row, self.extra.blocked_index(_state(self.extra, self.extra_state, extra), row.device), width)
        if self.withheld is not None:
            for index in self.withheld.indexes(row.device, extra):
                blocked |= _block(row, index, width)
        if self.quotes is not None:
            self.quotes.apply_row(row, extra)
        if blocked and self.fallback is not None and self.fallback < width and _nothing_left(row, self.fallback):
            # every token the request may still sample (its grammar, allowed_token_ids) is withheld:
            # end the response rather than hand the sampler a row with nothing to sample
            row[self.fallback] = 0.0


def _block(row: torch.Tensor, index: torch.Tensor, width: int) -> bool:
    """row[index] = -inf for a sorted index, ignoring ids the row does not have; whether any was."""
    if index.numel():
        if int(index[-1]) >= width:
            index = index[index < width]
        row[index] = BLOCKED
        return bool(index.numel())
    return False


def _nothing_left(row: torch.Tensor, probe: int) -> bool:
    """Whether every entry of `row` is withheld. `probe` (the end-of-sequence token, which no phrase
    holds) is read first: when it is still allowed, as it is for nearly every row, the row is not
    scanned (a scan of a 49k vocabulary costs more than the rest of a names-checked row's guard)."""
    return float(row[probe]) == BLOCKED and float(row.max()) == BLOCKED


def _state(matcher: TextMatcher, state: int, extra: Sequence[int]) -> int:
    return matcher.advance_tokens(state, extra) if extra else state


def _discourage(row: torch.Tensor, indexes: list[torch.Tensor], amount: float, width: int) -> None:
    """row[t] -= amount, once per token t matched by any of `indexes` (calibrated mode)."""
    index = torch.cat(indexes).unique() if len(indexes) > 1 else indexes[0]
    index = index[index < width]
    if index.numel():
        row[index] -= amount


PAIRS_AT_ONCE = 4096   # a group of rows with more (row, token) pairs than this is written on its own
NEAR_TOP = 2.0         # logits below the top within which a withheld token counts as what the model meant


class RowMasks:
    """Strict guards for many rows at once. Guards share their structures (every unflagged request's names
    check is one trie and two matchers; flagged requests on the same targets share theirs), so rows whose
    matches stand in the same states withhold the same tokens: one cached index per state. Groups with few
    (row, token) pairs (rows inside a name, a state few rows share) are written together, in one write from
    one host-to-device copy of their pairs; a group with many (the rows at the start state of a large
    policy's names) gets one write of its own from its index cached on the device, so no step builds pairs
    by the million. Each shared penalty is one more write. Row by row, the same guard costs three or four
    small writes a row (measured: 7 ms a decode step for 160 rows on 2 cores); on a GPU each write is a
    kernel launch, and a read back to the host waits for the device."""

    def __init__(self, cache_size: int = 4096, pairs_at_once: int = PAIRS_AT_ONCE):
        self._index: dict = {}
        self._device: dict = {}
        self.cache_size = cache_size
        self.pairs_at_once = pairs_at_once

    def index(self, guard: RequestGuard, width: int, lowered: bool = False) -> np.ndarray:
        """The sorted ids below `width` that `guard.apply_row` withholds in the guard's states (on the host);
        with `lowered`, those it lowers by the calibrated mask instead."""
        key = (guard.state_key(), width, lowered)
        out = self._index.get(key)
        if out is None:
            if len(self._index) >= self.cache_size:
                self._index.clear()
                self._device.clear()
            indexes = guard.lowered_indexes("cpu") if lowered else guard.blocked_indexes("cpu")
            ids = torch.cat(indexes).unique().numpy() if indexes else np.zeros(0, dtype=np.int64)
            out = self._index[key] = ids[ids < width]
        return out

    def device_index(self, guard: RequestGuard, width: int, device, lowered: bool = False) -> torch.Tensor:
        """`index` where the logits are, cached."""
        key = (guard.state_key(), width, str(device), lowered)
        out = self._device.get(key)
        if out is None:
            out = self._device[key] = to_device(torch.from_numpy(self.index(guard, width, lowered)), device)
        return out

    def penalise(self, logits: torch.Tensor, rows: list[int], guard: RequestGuard) -> None:
        """Add `guard.penalty` to each of `rows`."""
        index, values = guard._sparse_penalty(logits.shape[-1], logits.device, logits.dtype)
        at = to_device(torch.tensor(rows), logits.device).unsqueeze(1)
        logits[at, index.unsqueeze(0)] += values

    def lower(self, logits: torch.Tensor, groups: Sequence[tuple[RequestGuard, list[int]]]) -> None:
        """Subtract, in each group's rows, the calibrated mask from the tokens its guard lowers (every row's
        guard in the same states): one write per group."""
        width, device = logits.shape[-1], logits.device
        for guard, members in groups:
            if self.index(guard, width, lowered=True).size:
                at = to_device(torch.tensor(members), device).unsqueeze(1)
                tokens = self.device_index(guard, width, device, lowered=True).unsqueeze(0)
                logits[at, tokens] -= guard.soft

    def heads_into(self, logits: torch.Tensor, row: int, guard: RequestGuard) -> bool:
        """Whether a token the guard withholds in `row` is among the model's likeliest there (within
        NEAR_TOP logits of the top one): the model was about to write the name."""
        index = self.index(guard, logits.shape[-1])
        if not index.size:
            return False
        values = logits[row]
        return bool(values[torch.from_numpy(index).to(values.device)].max() >= values.max() - NEAR_TOP)

    def withhold(self, logits: torch.Tensor, groups: Sequence[tuple[RequestGuard, list[int]]]) -> None:
        """Withhold, in each group's rows, the tokens its guard withholds (every row's guard in the same
        states); a row left with nothing to sample gets its guard's fallback, as `apply_row` does."""
        width, device = logits.shape[-1], logits.device
        # the value made where the logits are: a Python float is copied to a GPU on its own, waiting for it
        value = torch.full((), BLOCKED, dtype=logits.dtype, device=device)
        rows, tokens, ending = [], [], {}
        for guard, members in groups:
            index = self.index(guard, width)
            if not index.size:
                continue
            if index.size * len(members) > self.pairs_at_once:
                at = to_device(torch.tensor(members), device)
                logits.index_put_((at.unsqueeze(1), self.device_index(guard, width, device).unsqueeze(0)), value)
            else:
                rows.append(np.repeat(np.asarray(members, dtype=np.int64), index.size))
                tokens.append(np.tile(index, len(members)))
            if guard.fallback is not None and guard.fallback < width:
                ending.setdefault(guard.fallback, []).extend(members)
        if rows:
            at = to_device(torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(tokens)])), device)
            logits.index_put_((at[0], at[1]), value)
        end_rows = _end_rows_on_host if device.type == "cpu" else _end_rows_on_device
        for fallback, members in ending.items():   # one fallback (the end of sequence) in practice
            end_rows(logits, to_device(torch.tensor(members), device), fallback)


def _end_rows_on_host(logits: torch.Tensor, at: torch.Tensor, fallback: int) -> None:
    """logits[row, fallback] = 0 for each of the rows `at` left with nothing to sample. Only rows whose
    `fallback` is withheld are scanned (nearly none): a scan of every row would cost more than the writes."""
    for row in at[logits[at, fallback] == BLOCKED].tolist():
        if _nothing_left(logits[row], fallback):
            logits[row, fallback] = 0.0


def _end_rows_on_device(logits: torch.Tensor, at: torch.Tensor, fallback: int) -> None:
    """`_end_rows_on_host` without reading anything back: on a GPU, a read waits for every queued kernel
    (a stall per decode step), while a scan of the rows is a few microseconds."""
    ended = logits.amax(dim=1)[at] == BLOCKED      # a max per row, not a copy of the rows
    logits[at, fallback] = torch.where(ended, torch.zeros_like(ended, dtype=logits.dtype), logits[at, fallback])


def to_device(tensor: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on `device`, queued without waiting for the device's work (a plain copy to a GPU
    waits for every kernel queued before it)."""
    return tensor.to(device, non_blocking=True)


def guard_rows(logits: torch.Tensor, rows: Sequence[tuple[int, RequestGuard, Sequence[int]]],
               masks: RowMasks) -> None:
    """Guard `logits` in place: each (row, guard, extra tokens) as `guard.apply_row(logits[row], extra)`
    would. Guards without extra tokens that are not forced are written in groups (`RowMasks`): by shared
    penalty, then by shared structures and states (the calibrated mask, then the withheld tokens). A strict
    guard whose row is inside a name and whose model was about to finish it answers the rest with the
    refusal (`refuse_from_here`); teacher forcing, which calls `apply_row` alone, scores as before."""
    penalised: dict[int, tuple[RequestGuard, list[int]]] = {}
    grouped: dict[tuple, tuple[RequestGuard, list[int]]] = {}
    quoted: list[tuple[int, QuoteState]] = []
    for row, guard, extra in rows:
        if guard.strict and not extra and guard.refusal and guard.inside_name() and masks.heads_into(logits, row, guard):
            guard.refuse_from_here()
        if guard.forced is not None or extra:
            guard.apply_row(logits[row], extra)
            continue
        if guard.quotes is not None:
            quoted.append((row, guard.quotes))
        if guard.penalty is not None:   # the runtime caches penalties: requests on the same targets share one
            penalised.setdefault(id(guard.penalty), (guard, []))[1].append(row)
        grouped.setdefault(guard.state_key(), (guard, []))[1].append(row)
    for guard, members in penalised.values():
        masks.penalise(logits, members, guard)
    groups = list(grouped.values())
    masks.lower(logits, [(g, members) for g, members in groups if g.soft is not None])   # after the penalty, as apply_row
    withhold_quotes(logits, quoted)      # first: `withhold` ends a row it leaves with nothing to sample
    masks.withhold(logits, groups)


def withhold_quotes(logits: torch.Tensor, rows: Sequence[tuple[int, QuoteState]]) -> None:
    """Withhold, in each row, the tokens that complete a corpus n-gram after its last τ tokens: per quote
    filter, one lookup for all its rows (exact: one binary search each, then one write of every (row, token)
    pair; Bloom: only the rows at a corpus prefix, restricted to their top candidates less the continuations)."""
    by_filter: dict[int, list[tuple[int, QuoteState]]] = {}
    for row, state in rows:
        by_filter.setdefault(id(state.filter), []).append((row, state))
    for members in by_filter.values():    # one filter (the policy's) in practice
        members[0][1].filter.apply(logits, [row for row, _ in members], [state for _, state in members])


class GuardSlots:
    """slot index -> (guard, the request's output-token list)."""

    def __init__(self):
        self.slots: dict[int, tuple[RequestGuard, Sequence[int]]] = {}
        self.masks = RowMasks()

    def add(self, index: int, guard: Optional[RequestGuard], output_ids: Sequence[int]) -> None:
        """A request (re)uses `index`; an unguarded request clears whatever was there."""
        if guard is None:
            self.slots.pop(index, None)
        else:
            self.slots[index] = (guard, output_ids)

    def remove(self, index: int) -> None:
        self.slots.pop(index, None)

    def move(self, src: int, dst: int, swap: bool) -> None:
        a, b = self.slots.pop(src, None), self.slots.pop(dst, None)
        if a is not None:
            self.slots[dst] = a
        if swap and b is not None:
            self.slots[src] = b

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Add penalties and block completing tokens, in place, for guarded rows only."""
        rows = []
        for index, (guard, output_ids) in self.slots.items():
            if index < logits.shape[0]:
                guard.observe(output_ids)
                rows.append((index, guard, ()))
        guard_rows(logits, rows, self.masks)
        return logits
