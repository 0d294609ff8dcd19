"""The verbatim-quote filter: no reply holds more than τ consecutive tokens of a forget corpus.

At build time every (τ+1)-gram of the corpus's token ids (n-grams never cross a document) goes
into a `QuoteIndex`. At each decode step a row whose last τ tokens (the prompt's tail, then its
output) form a corpus τ-gram `g` has every token `t` withheld for which `g + t` is a corpus
(τ+1)-gram, so the ids a reply holds never contain a corpus (τ+1)-gram: at most τ consecutive
corpus tokens, whatever the sampler does (the certified bound). False positives only withhold a
few more tokens in such states; there are no false negatives.

Hashing: a τ-gram's hash is the polynomial Σ g_i · P^(τ-1-i) mod 2^64, rolled one token at a time
(`QuoteState`), and a (τ+1)-gram's is `hash(g) · P + t`, so the hash of every candidate
continuation of a row follows from the row's one number.

Two structures, chosen by a memory budget (`build_quote_index`):

* exact: the sorted unique τ-gram hashes, and per hash its continuation tokens (CSR: offsets into
  one int32 array), about 20 bytes an n-gram. A lookup is one binary search per row (all rows of a
  step in one `searchsorted`) and hands back the tokens to withhold directly: no candidate is tested.
  Its only error is a 64-bit hash collision (about n / 2^64 per lookup): a false positive.
* bloom: two Bloom filters, of the τ-grams (which rows stand at a corpus prefix) and of the
  (τ+1)-grams, at the stated false-positive rate (-ln p / ln²2 bits an n-gram: 19 bits at 1e-4).
  A row whose τ-gram passes the first is restricted to its CANDIDATES most likely tokens, less those
  the second filter holds after its τ-gram: only what was tested can be sampled, so the bound stays
  certified. Testing the whole vocabulary instead (49k tokens, 14 bit reads each) measured 11 ms a row
  on 2 cores, 0.9 s a step with 80 reciting rows; the top 64 of a row at a corpus prefix hold nearly
  all of its probability, and a row elsewhere (all but a false-positive share of them) is untouched.

Limits of the bound: it holds on token ids. The same text tokenised another way ("Utr" + "echt"
where the corpus has "Utrecht") is other ids; `aliases` closes the common case, a token split into
shorter pieces (a withheld token's proper prefixes are withheld too), and `longest_run` judges a
text on its canonical re-tokenisation, as an audit would. Plain numpy/torch; no vLLM here.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

P = 0x9E3779B97F4A7C15          # odd multiplier of the rolling hash
MASK = (1 << 64) - 1
PREFIX_SALT = 0x5851F42D4C957F2D   # keeps the τ-gram filter's keys apart from the (τ+1)-gram filter's
EXACT_BYTES_PER_NGRAM = 20      # 8 (key) + 8 (offset) + 4 (token), before duplicates are removed
BLOCKED = float("-inf")
CANDIDATES = 64                 # Bloom mode: the tokens a row at a corpus prefix keeps, less the tested continuations


class QuoteError(ValueError):
    """A corpus whose quote structure cannot be built (the message says why)."""


@dataclass(frozen=True)
class QuoteStats:
    """What policy.json records of a quote structure."""

    kind: str            # exact | bloom
    tau: int             # a reply holds at most this many consecutive corpus tokens
    n_tokens: int        # corpus tokens
    n_documents: int
    n_ngrams: int        # (τ+1)-grams inserted (exact: unique ones)
    n_prefixes: int      # τ-grams (exact: unique; bloom: inserted, with repeats)
    bytes: int
    fpr: float           # false-positive rate of one lookup (exact: 64-bit hash collisions)
    hash_functions: int = 0   # bloom: bit reads per lookup

    def as_meta(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- hashing
def window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash of every n-window of `ids` (uint64, len(ids) - n + 1 of them)."""
    ids = np.asarray(ids).astype(np.uint64)
    count = len(ids) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    out = np.zeros(count, dtype=np.uint64)
    p = np.uint64(P)
    for i in range(n):
        out *= p
        out += ids[i:i + count]
    return out


def extend(prefix: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The (τ+1)-gram hashes `hash(g) · P + t` (numpy broadcasting)."""
    return prefix.astype(np.uint64) * np.uint64(P) + np.asarray(tokens).astype(np.uint64)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: well-spread bits for the Bloom filters' positions."""
    x = np.asarray(x, dtype=np.uint64).copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def iter_windows(tokens: np.ndarray, starts: np.ndarray, tau: int, chunk: int = 1 << 22):
    """(τ-gram hash, next token) of every (τ+1)-gram that lies inside one document of the
    concatenated `tokens` (documents begin at `starts`), `chunk` windows at a time (bounded memory)."""
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.append(starts[1:], len(tokens))
    n = len(tokens) - tau
    for a in range(0, max(n, 0), chunk):
        b = min(a + chunk, n)
        prefix = window_hashes(tokens[a:b + tau - 1], tau)       # the windows starting at a .. b-1
        pos = np.arange(a, b)
        inside = pos + tau < ends[np.searchsorted(starts, pos, side="right") - 1]
        yield prefix[inside], np.asarray(tokens[a + tau:b + tau], dtype=np.int32)[inside]


def corpus_windows(tokens: np.ndarray, starts: np.ndarray, tau: int) -> tuple[np.ndarray, np.ndarray]:
    """`iter_windows`, all at once."""
    parts = list(iter_windows(tokens, starts, tau))
    if not parts:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int32)
    return np.concatenate([p for p, _ in parts]), np.concatenate([t for _, t in parts])


def count_windows(lengths: Iterable[int], tau: int) -> int:
    return int(sum(max(0, int(n) - tau) for n in lengths))


# ----------------------------------------------------------------------------- structures
class QuoteIndex:
    """Which tokens complete a corpus (τ+1)-gram after a given τ-gram hash."""

    kind = ""
    stats: QuoteStats

    def withheld(self, prefixes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For τ-gram hashes `prefixes`: (position in `prefixes`, token) of every token to withhold."""
        raise NotImplementedError

    def contains(self, grams: np.ndarray) -> np.ndarray:
        """Whether each row of `grams` ([n, τ+1] token ids) is a corpus (τ+1)-gram."""
        raise NotImplementedError

    def tensors(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def tau(self) -> int:
        return self.stats.tau


class ExactQuotes(QuoteIndex):
    kind = "exact"

    def __init__(self, keys: np.ndarray, offsets: np.ndarray, conts: np.ndarray, stats: QuoteStats):
        self.keys, self.offsets, self.conts, self.stats = keys, offsets, conts, stats

    @classmethod
    def build(cls, tokens: np.ndarray, starts: np.ndarray, tau: int) -> "ExactQuotes":
        prefix, nxt = corpus_windows(tokens, starts, tau)
        order = np.lexsort((nxt, prefix))
        prefix, nxt = prefix[order], nxt[order]
        del order
        fresh = np.ones(len(prefix), dtype=bool)
        fresh[1:] = (prefix[1:] != prefix[:-1]) | (nxt[1:] != nxt[:-1])
        prefix, nxt = prefix[fresh], nxt[fresh]
        del fresh
        first = np.ones(len(prefix), dtype=bool)
        first[1:] = prefix[1:] != prefix[:-1]
        keys = prefix[first]
        offsets = np.append(np.flatnonzero(first), len(prefix)).astype(np.int64)
        n_bytes = keys.nbytes + offsets.nbytes + nxt.nbytes
        stats = QuoteStats("exact", tau, len(tokens), len(starts), len(nxt), len(keys), int(n_bytes),
                           fpr=len(keys) / 2.0 ** 64)
        return cls(keys, offsets, nxt, stats)

    def _find(self, prefixes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prefixes = np.asarray(prefixes, dtype=np.uint64)
        if not len(self.keys) or not len(prefixes):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.keys, prefixes), len(self.keys) - 1)
        hit = np.flatnonzero(self.keys[pos] == prefixes)
        return hit, pos[hit]

    def withheld(self, prefixes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hit, pos = self._find(prefixes)
        lo, hi = self.offsets[pos], self.offsets[pos + 1]
        counts = hi - lo
        total = int(counts.sum())
        if not total:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        # lo[i] .. hi[i] for each hit, as one index: a ramp restarted at each hit's first slot
        base = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return np.repeat(hit, counts), self.conts[base + np.arange(total)].astype(np.int64)

    def contains(self, grams: np.ndarray) -> np.ndarray:
        grams = np.asarray(grams)
        tau = grams.shape[1] - 1
        prefixes = window_hashes(grams[:, :tau].reshape(-1), tau)[::tau] if len(grams) else np.zeros(0, np.uint64)
        which, tokens = self.withheld(prefixes)
        found = set(zip(which.tolist(), tokens.tolist()))
        return np.array([(i, int(t)) in found for i, t in enumerate(grams[:, tau])], dtype=bool)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"keys": self.keys, "offsets": self.offsets, "conts": self.conts}


def bloom_size(n: int, fpr: float) -> tuple[int, int]:
    """(bits, hash functions) of a Bloom filter of `n` keys at false-positive rate `fpr`."""
    bits = max(64, int(math.ceil(-max(n, 1) * math.log(fpr) / math.log(2) ** 2)))
    bits = (bits + 63) // 64 * 64
    return bits, max(1, int(round(bits / max(n, 1) * math.log(2))))


class Bloom:
    """A Bloom filter over uint64 keys (double hashing of their mixed bits)."""

    def __init__(self, bits: np.ndarray, k: int):
        self.bits, self.k = bits, k
        self.m = np.uint64(len(bits) * 8)

    @classmethod
    def empty(cls, n: int, fpr: float) -> "Bloom":
        m, k = bloom_size(n, fpr)
        return cls(np.zeros(m // 8, dtype=np.uint8), k)

    def _positions(self, keys: np.ndarray):
        h1 = mix(keys)
        h2 = mix(h1 ^ np.uint64(PREFIX_SALT)) | np.uint64(1)
        for i in range(self.k):
            yield (h1 + np.uint64(i) * h2) % self.m

    def add(self, keys: np.ndarray) -> None:
        for pos in self._positions(keys):
            np.bitwise_or.at(self.bits, (pos >> np.uint64(3)).astype(np.int64),
                             (np.uint8(1) << (pos & np.uint64(7)).astype(np.uint8)))

    def test(self, keys: np.ndarray) -> np.ndarray:
        out = np.ones(len(keys), dtype=bool)
        for pos in self._positions(keys):
            out &= (self.bits[(pos >> np.uint64(3)).astype(np.int64)] >> (pos & np.uint64(7)).astype(np.uint8)) & 1 == 1
        return out


class BloomQuotes(QuoteIndex):
    kind = "bloom"

    def __init__(self, grams: Bloom, prefixes: Bloom, vocab_size: int, stats: QuoteStats):
        self.grams, self.prefixes, self.vocab_size, self.stats = grams, prefixes, vocab_size, stats

    @classmethod
    def build(cls, tokens: np.ndarray, starts: np.ndarray, tau: int, fpr: float, vocab_size: int,
              chunk: int = 1 << 22) -> "BloomQuotes":
        """Both filters sized for every (τ+1)-gram counted with repeats (an upper bound: the stated
        rate is not exceeded), filled a chunk of windows at a time so memory stays bounded."""
        n = count_windows(np.diff(np.append(starts, len(tokens))), tau)
        grams, prefixes = Bloom.empty(n, fpr), Bloom.empty(n, fpr)
        for prefix, nxt in iter_windows(tokens, starts, tau, chunk):
            grams.add(extend(prefix, nxt))
            prefixes.add(prefix ^ np.uint64(PREFIX_SALT))
        stats = QuoteStats("bloom", tau, len(tokens), len(starts), n, n, int(grams.bits.nbytes + prefixes.bits.nbytes),
                           fpr=fpr, hash_functions=grams.k)
        return cls(grams, prefixes, vocab_size, stats)

    def at_prefix(self, prefixes: np.ndarray) -> np.ndarray:
        """Whether each τ-gram hash may begin a corpus (τ+1)-gram."""
        return self.prefixes.test(np.asarray(prefixes, dtype=np.uint64) ^ np.uint64(PREFIX_SALT))

    def continues(self, prefixes: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """[rows, k]: whether candidate token j completes a corpus (τ+1)-gram after row i's τ-gram."""
        keys = extend(np.asarray(prefixes, dtype=np.uint64)[:, None], candidates)
        return self.grams.test(keys.reshape(-1)).reshape(candidates.shape)

    def contains(self, grams: np.ndarray) -> np.ndarray:
        grams = np.asarray(grams)
        tau = grams.shape[1] - 1
        prefixes = window_hashes(grams[:, :tau].reshape(-1), tau)[::tau] if len(grams) else np.zeros(0, np.uint64)
        return self.grams.test(extend(prefixes, grams[:, tau])) & self.prefixes.test(prefixes ^ np.uint64(PREFIX_SALT))

    def tensors(self) -> dict[str, np.ndarray]:
        return {"grams": self.grams.bits, "prefixes": self.prefixes.bits}


def build_quote_index(tokens: np.ndarray, starts: np.ndarray, tau: int, budget_bytes: int, fpr: float,
                      vocab_size: int) -> QuoteIndex:
    """The exact structure when its upper bound (EXACT_BYTES_PER_NGRAM a window, repeats counted) fits
    `budget_bytes`, else Bloom filters at `fpr`; a corpus whose filters do not fit either is refused."""
    n = count_windows(np.diff(np.append(starts, len(tokens))), tau)
    if n == 0:
        raise QuoteError(f"the corpus has no run of {tau + 1} tokens inside one document: nothing to stop quoting "
                          "(a shorter quote_tokens, or a longer corpus)")
    if n * EXACT_BYTES_PER_NGRAM <= budget_bytes:
        return ExactQuotes.build(tokens, starts, tau)
    need = 2 * bloom_size(n, fpr)[0] // 8
    if need > budget_bytes:
        raise QuoteError(f"the corpus's {n:,} {tau + 1}-grams need {_mib(need)} MiB of Bloom filters at "
                          f"false-positive rate {fpr:g} (exact: {_mib(n * EXACT_BYTES_PER_NGRAM)} MiB), over "
                          f"quote_budget_mb={_mib(budget_bytes)}; raise quote_budget_mb or quote_fpr")
    return BloomQuotes.build(tokens, starts, tau, fpr, vocab_size)


def _mib(n: int) -> str:
    return f"{n / 2**20:.4g}"


def quote_index_from(tensors: dict[str, np.ndarray], stats: dict, vocab_size: int) -> QuoteIndex:
    """A structure as policy.json (`stats`) and its tensors file describe it."""
    stats = QuoteStats(**stats)
    if stats.kind == "exact":
        return ExactQuotes(tensors["keys"], tensors["offsets"], tensors["conts"], stats)
    return BloomQuotes(Bloom(tensors["grams"], stats.hash_functions), Bloom(tensors["prefixes"], stats.hash_functions),
                       vocab_size, stats)


# ----------------------------------------------------------------------------- serving
class Aliases:
    """Per token, the tokens whose text is a proper, non-empty prefix of its own (raw vocabulary
    strings: byte-level pieces compare as bytes), as CSR: withholding a continuation withholds the
    shorter pieces a reply could spell it with too."""

    def __init__(self, tokenizer, vocab_size: int):
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        by_text = {p: i for i, p in enumerate(pieces) if isinstance(p, str) and i not in special}
        lists = [[] for _ in range(vocab_size)]
        for i, p in enumerate(pieces):
            if isinstance(p, str) and i not in special and i < vocab_size:
                lists[i] = [by_text[p[:k]] for k in range(1, len(p)) if p[:k] in by_text]
        self.offsets = np.zeros(vocab_size + 1, dtype=np.int64)
        self.offsets[1:] = np.cumsum([len(x) for x in lists])
        self.ids = np.array([t for x in lists for t in x], dtype=np.int64)

    def expand(self, which: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which, tokens) with every token's aliases added under the same `which`."""
        if not len(tokens) or not len(self.ids):
            return which, tokens
        keep = tokens < len(self.offsets) - 1
        safe = np.where(keep, tokens, 0)
        lo, hi = self.offsets[safe], self.offsets[safe + 1]
        counts = hi - lo
        total = int(counts.sum())
        counts[~keep] = 0
        base = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return (np.concatenate([which, np.repeat(which, counts)]),
                np.concatenate([tokens, self.ids[base + np.arange(total)]]))


class QuoteFilter:
    """A policy's quote structure as served: shared by every request of an engine."""

    def __init__(self, index: QuoteIndex, aliases: Optional[Aliases] = None):
        self.index, self.aliases = index, aliases
        self.tau = index.tau

    def state(self) -> "QuoteState":
        return QuoteState(self)

    def apply(self, logits: torch.Tensor, rows: Sequence[int], states: Sequence["QuoteState"]) -> None:
        """Withhold, in each `logits[rows[n]]`, what `states[n]` forbids: exact, one lookup and one write for
        all rows; bloom, the rows at a corpus prefix restricted to their untested-free top CANDIDATES."""
        if isinstance(self.index, BloomQuotes):
            self._restrict(logits, rows, states)
            return
        which, tokens = self.withheld(states)
        keep = tokens < logits.shape[-1]
        if keep.any():
            pairs = np.stack([np.asarray(rows, dtype=np.int64)[which[keep]], tokens[keep]])
            at = torch.from_numpy(pairs).to(logits.device, non_blocking=True)
            logits.index_put_((at[0], at[1]), torch.full((), BLOCKED, dtype=logits.dtype, device=logits.device))

    def _restrict(self, logits: torch.Tensor, rows: Sequence[int], states: Sequence["QuoteState"]) -> None:
        full = [n for n, s in enumerate(states) if s.full]
        prefixes = np.array([states[n].hash for n in full], dtype=np.uint64)
        hit = np.flatnonzero(self.index.at_prefix(prefixes)) if full else []
        if not len(hit):
            return
        at = torch.tensor([rows[full[i]] for i in hit], device=logits.device)
        values, index = logits[at].topk(min(CANDIDATES, logits.shape[-1]), dim=1)
        candidates = index.cpu().numpy()
        found = self.index.continues(prefixes[hit], candidates)
        if self.aliases is not None and found.any():
            which, col = np.nonzero(found)
            which, tokens = self.aliases.expand(which, candidates[which, col])
            codes = np.arange(len(hit))[:, None] * logits.shape[-1] + candidates
            found = np.isin(codes, which * logits.shape[-1] + tokens)
        values.masked_fill_(torch.from_numpy(found).to(logits.device), BLOCKED)
        logits.index_fill_(0, at, BLOCKED)
        logits[at.unsqueeze(1), index] = values

    def withheld(self, states: Sequence["QuoteState"]) -> tuple[np.ndarray, np.ndarray]:
        """Exact mode: (position in `states`, token) of every token to withhold, one lookup for all of them."""
        at = [n for n, s in enumerate(states) if s.full]
        if not at:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        which, tokens = self.index.withheld(np.array([states[n].hash for n in at], dtype=np.uint64))
        if self.aliases is not None and len(tokens):
            which, tokens = self.aliases.expand(which, tokens)
        return np.asarray(at, dtype=np.int64)[which], tokens


class QuoteState:
    """One request's last τ tokens and their rolling hash."""

    __slots__ = ("filter", "window", "hash", "_drop")

    def __init__(self, quote_filter: QuoteFilter):
        self.filter = quote_filter
        self.window: deque = deque(maxlen=quote_filter.tau)
        self.hash = 0
        self._drop = pow(P, quote_filter.tau - 1, 1 << 64)   # weight of the token leaving the window

    @property
    def full(self) -> bool:
        return len(self.window) == self.window.maxlen

    def feed(self, tokens: Sequence[int]) -> None:
        window, h = self.window, self.hash
        for tok in tokens:
            tok = int(tok)
            if len(window) == window.maxlen:
                h = (h - window[0] * self._drop) & MASK
            h = (h * P + tok) & MASK
            window.append(tok)
        self.hash = h

    def after(self, extra: Sequence[int]) -> "QuoteState":
        """A copy advanced over `extra` (draft tokens, teacher-forced continuations)."""
        out = QuoteState.__new__(QuoteState)
        out.filter, out.window, out.hash, out._drop = self.filter, deque(self.window, self.window.maxlen), self.hash, self._drop
        out.feed(extra)
        return out

    def withheld(self, extra: Sequence[int] = ()) -> np.ndarray:
        """Exact mode: the tokens this request may not sample next (after `extra`)."""
        state = self.after(extra) if extra else self
        return np.unique(self.filter.withheld([state])[1])

    def apply_row(self, row: torch.Tensor, extra: Sequence[int] = ()) -> None:
        """`QuoteFilter.apply` on one row of logits (after `extra`)."""
        self.filter.apply(row.unsqueeze(0), [0], [self.after(extra) if extra else self])


def longest_run(reply: Sequence[int], corpus: Sequence[int]) -> int:
    """The longest run of consecutive tokens `reply` shares with `corpus` (dynamic programming; for
    tests and audits of short replies)."""
    best, prev = 0, [0] * (len(corpus) + 1)
    for a in reply:
        cur = [0] * (len(corpus) + 1)
        for j, b in enumerate(corpus, 1):
            if a == b:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best
