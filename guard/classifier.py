"""The prompt classifier: does a request ask about a forget target? Runs once per request.

Two tests, cheapest first:
1. lexical: the prompt (every message, every role) names a target (its full name, or a distinctive
   part of it: one that never occurs in the retain prompts the policy was calibrated on), read
   through the canonical views of disguise.py: folded (invisible characters, compatibility forms,
   diacritics and look-alike letters undone), de-leeted, with spaced-out letters joined, and
   backwards; and a name of 8+ letters spelled with any separators (or none) inside the collapsed
   text;
2. semantic: the cosine similarity of an all-MiniLM-L6-v2 embedding (or of its static distillation, for a
   policy built with `embedder: static`) to the nearest forget question (faiss) reaches the calibrated
   threshold. Embedded: the last user message (folded), its
   de-leeted / joined form when that differs, all user messages together when there are several,
   and every other message of the prompt (system, tool, assistant prefill, earlier turns; the
   template's markers and role headers cut away), a long one as short sentence windows so that a
   question after a page of filler is not lost past the embedder's 256 tokens. The best score
   decides. A short ordinary prompt costs one embedding (a repeated system prompt is cached).
A flagged request is guarded against the items of the targets it touches plus the top-k items
retrieved for it. `build.py` calibrates the threshold through this same procedure.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import disguise
from .embedder import embed, embedder_kind, load_embedder
from .phrases import ProbeIndex

MIN_COLLAPSED = 8      # letters a name needs before it is also searched for with separators removed
WINDOW_WORDS = 40      # a message longer than this is embedded as sentence windows too
CACHED_CHARS = 2000    # the nearest items of texts up to this length are kept for repeats (system prompts)

SENTINEL = "\u2063UNLEARN\u2063"


@dataclass(frozen=True)
class Decision:
    flagged: bool
    score: float                 # nearest forget question's cosine (nan when the lexical test decided)
    reason: str
    targets: tuple[int, ...] = ()
    items: tuple[int, ...] = ()
    # the retrieved items (top-k over its texts, and the last message's and final question's nearest), also
    # for unflagged prompts (a forced guard uses them)
    nearest: tuple[int, ...] = ()
    named: tuple[int, ...] = ()     # the targets the prompt names (the lexical test's hits)


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return a[len(a) - n:]


class UserTurn:
    """Cuts the user messages out of a rendered chat prompt, for any chat template.

    The template is rendered twice, as a first turn and after an exchange; the text both renders
    share right before the message is the user-turn header (without a BOS or system prompt), and
    the text right after it up to its first newline ends the message."""

    def __init__(self, tokenizer):
        self.header = self.footer = None
        if not getattr(tokenizer, "chat_template", None):
            return
        render = lambda msgs: tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)  # noqa: E731
        try:
            first = render([{"role": "user", "content": SENTINEL}])
        except Exception:  # no usable template: the whole text is the message
            return
        before, _, after = first.partition(SENTINEL)
        try:
            later = render([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                            {"role": "user", "content": SENTINEL}])
            header = _common_suffix(before, later.partition(SENTINEL)[0])
        except Exception:  # a template that refuses multi-turn: the last line before the message
            stripped = before.rstrip("\n")
            header = stripped.rsplit("\n", 1)[-1] + before[len(stripped):]
        self.header = header if header.strip() else None
        self.footer = (after.split("\n")[0] or None) if after else None

    def segments(self, text: str) -> list[str]:
        """Every user message in order (the whole text when the template's markers are absent)."""
        if not self.header or self.header not in text:
            return [text.strip()]
        out = []
        for part in text.split(self.header)[1:]:
            if self.footer and self.footer in part:
                part = part.split(self.footer, 1)[0]
            out.append(part.strip())
        return out or [text.strip()]

    def __call__(self, text: str) -> str:
        """The last user message."""
        return self.segments(text)[-1]


def as_served(tokenizer, questions: list[str]) -> list:
    """Each question as the runtime hands it to `classify`: rendered as a first user turn with the
    tokenizer's chat template (its default system prompt included), encoded, decoded with the
    special tokens, and cut into user messages. Plain strings without a tokenizer or template."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return list(questions)
    turn = UserTurn(tokenizer)
    out = []
    for q in questions:
        try:
            text = tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True)
        except Exception:  # a template that cannot render it: the question alone
            out.append(q)
            continue
        whole = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"], skip_special_tokens=False)
        out.append((whole, turn.segments(whole)))
    return out


def collapsed_names(targets: list[dict]) -> list[tuple[str, int]]:
    """(collapsed probe, target): the policy's own list (build.collapsed_probes, which leaves out any
    that occurs in a retain prompt), or, for a policy built before it, every probe of at least
    MIN_COLLAPSED letters and digits."""
    out: dict = {}
    for t, target in enumerate(targets):
        keys = target.get("collapsed")
        if keys is None:
            keys = target["probes"]
        for key in dict.fromkeys(disguise.collapsed(disguise.fold(k)) for k in keys):   # folded as prompts are now
            if len(key) >= MIN_COLLAPSED:
                out.setdefault((key, t), None)
    return list(out)


class CollapsedIndex:
    """Which (collapsed probe, target) pairs occur in a text, forwards or backwards, in time linear in
    the text whatever the number of probes: each probe (and its reverse) is keyed by its first
    MIN_COLLAPSED characters, looked up at every position of the text, then checked in full. The
    same answers as testing `key in text or key[::-1] in text` for every pair."""

    def __init__(self, pairs: list[tuple[str, int]]):
        self.by_head: dict[str, list[tuple[str, int]]] = {}
        for key, target in pairs:
            for form in dict.fromkeys((key, key[::-1])):
                self.by_head.setdefault(form[:MIN_COLLAPSED], []).append((form, target))

    def __bool__(self) -> bool:
        return bool(self.by_head)

    def find(self, text: str) -> set[int]:
        found: set[int] = set()
        heads = self.by_head
        for i in range(len(text) - MIN_COLLAPSED + 1):
            for form, target in heads.get(text[i:i + MIN_COLLAPSED], ()):
                if target not in found and text.startswith(form, i):
                    found.add(target)
        return found


def spelled_out(text: str, phrases: Sequence[str]) -> set[str]:
    """The phrases `text` contains, read as the lexical test reads a prompt: as whole words in any
    lexical view, or, for phrases of MIN_COLLAPSED+ letters, inside a collapsed view (forwards or
    backwards). `PromptClassifier.named` for a few phrases, without a policy."""
    words = ProbeIndex([(p, p) for p in phrases] + [(disguise.fold(p), p) for p in phrases])
    letters = CollapsedIndex([(disguise.collapsed(disguise.fold(p)), p) for p in phrases
                              if len(disguise.collapsed(disguise.fold(p))) >= MIN_COLLAPSED])
    return lexical_hits(text, words, letters)


def lexical_hits(text: str, words: ProbeIndex, letters: CollapsedIndex) -> set:
    """The keys of `words` found as whole words in any lexical view of `text` (folded, de-leeted,
    joined, backwards), and of `letters` inside a collapsed view (forwards or backwards)."""
    found: set = set()
    for view in disguise.lexical_views(text):
        found |= words.find(view)
    if letters:
        for view in disguise.collapsed_views(text):
            found |= letters.find(view)
    return found


MAX_QUERIES = 48   # texts one prompt is embedded as, at most (and its `question_end`): a longer prompt gets longer windows
CUE_WORDS = 3      # words after a prompt's last question that still leave it the question asked ("Answer:")


def bounded_windows(text: str, max_words: int, limit: int) -> list[str]:
    """`disguise.windows(text)`, or, where those would be more than `limit`, `limit` half-overlapping
    windows of equal length that cover the whole text (the last one its tail): the work a prompt
    costs is bounded whatever its shape (thousands of one-word lines), and no part goes unread."""
    out = disguise.windows(text, max_words)
    if len(out) <= limit:
        return out
    words = text.split()
    size = max(max_words, -(-2 * len(words) // max(1, limit - 1)))
    step = max(1, size // 2)
    chunks = [" ".join(words[j:j + size]) for j in range(0, max(1, len(words) - step), step)]
    return chunks[:limit - 1] + [" ".join(words[-size:])]


def queries(whole: str, segments: list[str], max_words: int = WINDOW_WORDS) -> list[str]:
    """The texts the semantic test embeds for one prompt, without repeats: the last user message
    (folded) first, then its de-leeted / joined / turned-round forms where they differ
    (disguise.semantic_views), all user messages together when there are several, then every other
    message of the prompt (markers and role headers removed), a long one (over `max_words` words)
    as sentence windows. The last user message is not repeated unless it is long (its windows).
    At most MAX_QUERIES texts: past that, the messages are read as one text in longer windows."""
    views = disguise.semantic_views(segments[-1] if segments else "")
    last = views[0]
    out = list(views)
    if len(segments) > 1:
        out.append(disguise.fold("\n".join(segments)))
    room = max(2, MAX_QUERIES - len(out))
    rest = [disguise.fold(m) for m in disguise.messages(whole) or [whole]]
    read = [bounded_windows(m, max_words, room) if len(m.split()) > max_words else [m] if m != last else []
            for m in rest]
    if sum(len(r) for r in read) > room:
        read = [bounded_windows("\n".join(rest), max_words, room)]
    out += [q for r in read for q in r]
    return [q for q in dict.fromkeys(out) if q.strip()][:MAX_QUERIES] or [last]


def question_end(segments: list[str], max_words: int = WINDOW_WORDS) -> str | None:
    """Where the last user message is long, the request it ends on, folded as `queries` folds it: its last
    sentence that asks a question when only a cue ("Answer:") follows, else its last sentence of more
    words than a cue. A few-shot prompt asks after examples that match other items more closely; the
    request's nearest items join its guard."""
    last = disguise.fold(segments[-1] if segments else "")     # semantic_views' first view, without the others
    if len(last.split()) <= max_words:
        return None
    sents = disguise.sentences(last)
    asked = [n for n, s in enumerate(sents) if s.endswith("?")]
    if asked and sum(len(s.split()) for s in sents[asked[-1] + 1:]) <= CUE_WORDS:
        return sents[asked[-1]]
    return next((s for s in reversed(sents) if len(s.split()) > CUE_WORDS), None)


def nearest_of_both(sims_a: np.ndarray, idx_a: np.ndarray, sims_b: np.ndarray, idx_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two searches' results ([n, k] similarities, descending, and item ids; -1 where none) as one: per
    row the k nearest distinct items, each at its higher similarity (an item is its question and its
    answer)."""
    n, k = sims_a.shape
    sims = np.full((n, k), -np.inf, dtype=sims_a.dtype)
    idx = np.full((n, k), -1, dtype=idx_a.dtype)
    both_s, both_i = np.concatenate([sims_a, sims_b], 1), np.concatenate([idx_a, idx_b], 1)
    for row in range(n):
        kept: list[int] = []
        for j in np.argsort(-both_s[row], kind="stable"):
            item = int(both_i[row, j])
            if item >= 0 and item not in kept:
                sims[row, len(kept)], idx[row, len(kept)] = both_s[row, j], item
                kept.append(item)
                if len(kept) == k:
                    break
    return sims, idx


class PromptClassifier:
    def __init__(self, policy, cache_size: int = 4096):
        self.policy = policy
        self.threshold = policy.threshold
        self.embedder = embedder_kind(policy.config.embedder)     # the one its index was built with (load_policy checks)
        self.top_k = policy.config.top_k
        # a target's probes (its name and distinctive parts) and the titles its answers quote (policies built
        # before titles were read have none)
        probes = [(p, t) for t, target in enumerate(policy.targets) for p in [*target["probes"], *target.get("titles", ())]]
        # the probes folded too, so a name written with diacritics matches its folded spelling
        self.probes = ProbeIndex(probes + [(disguise.fold(p), t) for p, t in probes])
        self.collapsed = CollapsedIndex(collapsed_names(policy.targets))
        self.item_targets = [tuple(item["targets"]) for item in policy.items]
        target_items: list[list[int]] = [[] for _ in policy.targets]
        for i, ts in enumerate(self.item_targets):     # one pass: items x targets is 10^9 at 10^4 targets
            for t in dict.fromkeys(ts):
                target_items[t].append(i)
        self.target_items = [tuple(items) for items in target_items]
        self._cache: OrderedDict = OrderedDict()      # (text, k) -> (similarities, item ids)
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the sentence embedder and run it once (about half a second on 2 cores), so the first
        requests an engine admits do not wait for it. Not through `embed`: its cache of recent texts would
        answer a second warm-up in the same process without touching the model."""
        load_embedder(embedder=self.embedder)(["warm up"])

    def expand(self, targets: set[int], items: set[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Close a set of targets and items: the targets of the items, then all items of the targets."""
        for i in list(items):
            targets.update(self.item_targets[i])
        for t in targets:
            items.update(self.target_items[t])
        return tuple(sorted(targets)), tuple(sorted(items))

    def named(self, text: str) -> set[int]:
        """The targets `text` names: as whole words in any lexical view (folded, de-leeted, joined,
        backwards), or, for names of MIN_COLLAPSED+ letters, inside the collapsed text (forwards or
        backwards), whatever separates its letters."""
        return lexical_hits(text, self.probes, self.collapsed)

    def _search(self, texts: list[str], k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Nearest forget items of each text, embedding those not seen recently in one call (the
        embedder batches them by length, so short texts are not padded to a long one's length)."""
        with self._lock:
            out = {t: self._cache[(t, k)] for t in texts if (t, k) in self._cache}
        missing = [t for t in dict.fromkeys(texts) if t not in out]
        if not missing:
            return out
        # the default embedder's call as before the static one existed (what callers and tests intercept)
        vecs = embed(missing) if self.embedder == "minilm" else embed(missing, embedder=self.embedder)
        sims, idx = self.policy.index.search(vecs, k)
        if self.policy.answers is not None:
            sims, idx = nearest_of_both(sims, idx, *self.policy.answers.search(vecs, k))
        with self._lock:
            for t, s, i in zip(missing, sims, idx):
                out[t] = (s, i)
                if len(t) <= CACHED_CHARS:      # a huge message is not kept
                    self._cache[(t, k)] = (s, i)
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return out

    def classify(self, prompts: list, threshold: float | None = None, top_k: int | None = None) -> list[Decision]:
        """One decision per prompt. A prompt is a string (one message) or (whole prompt text, user
        messages): the lexical test reads the whole text (every turn, the system prompt too); the
        semantic test scores every text `queries` makes of it, for all prompts together (one
        embedding call); the best score decides."""
        threshold = self.threshold if threshold is None else threshold
        top_k = min(self.top_k if top_k is None else top_k, self.policy.index.ntotal)
        prompts = [(p, [p]) if isinstance(p, str) else p for p in prompts]
        out: list[Decision | None] = [None] * len(prompts)
        asked: dict[int, list[str]] = {}
        named: dict[int, set[int]] = {}
        ends: dict[int, str] = {}
        for n, (whole, segments) in enumerate(prompts):
            named[n] = self.named(whole)
            # a prompt naming one target is still scored: naming a target must not hide a question
            # about another one (its items join the guard when the semantic test flags it)
            asked[n] = queries(whole, list(segments) or [whole])
            end = question_end(list(segments) or [whole])
            if end is not None:
                ends[n] = end
                asked[n] += [end] if end not in asked[n] else []
        if asked:
            found = self._search([q for qs in asked.values() for q in qs], top_k)
            for n, qs in asked.items():
                best: dict[int, float] = {}          # item -> its best similarity over the queries
                for q in qs:
                    sims, idx = found[q]
                    for s, i in zip(sims, idx):
                        if i >= 0 and s > best.get(int(i), -2.0):
                            best[int(i)] = float(s)
                score = max((float(found[q][0][0]) for q in qs), default=-2.0)
                # the items nearest the last message (and its end, where it is long), and the best-scoring
                # items over all queries
                first = {int(i) for q in (qs[0], ends.get(n, qs[0])) for i in found[q][1] if i >= 0}
                nearest = tuple(sorted(first | set(sorted(best, key=best.get, reverse=True)[:top_k])))
                hits = named[n]
                if hits:
                    names = ", ".join(self.policy.targets[t]["name"] for t in sorted(hits))
                    also = set(nearest) if score >= threshold else set()   # the same rule as unnamed prompts
                    out[n] = Decision(True, score, f"names {names}", *self.expand(set(hits), also), nearest=nearest,
                                      named=tuple(sorted(hits)))
                elif score >= threshold:
                    out[n] = Decision(True, score, f"similarity {score:.3f} >= {threshold:.3f}",
                                      *self.expand(set(), set(nearest)), nearest=nearest)
                else:
                    out[n] = Decision(False, score, f"similarity {score:.3f} < {threshold:.3f}", nearest=nearest)
        return out
