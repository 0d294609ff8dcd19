"""From a request to its decode-time guard: the part both vLLM adapters share.

`GuardRuntime.guards(requests)` classifies a batch of newly admitted requests once (never per
decode step) and returns, per request, None (not flagged: its logits are never touched) or a
`RequestGuard` holding the forbidden-sequence trie and the penalty for the targets it touches.
A request whose classification fails gets a guard that forces the policy's refusal (fail closed),
and the failure is logged.

Per-request arguments (`vllm_xargs` on the OpenAI server, `SamplingParams.extra_args` offline) may
only tighten the server's policy. `parse_request_args` refuses a malformed value (a ValueError,
which the server answers with HTTP 400) by its form alone, and clamps a well-formed value that would
loosen the policy to the policy's own, silently: which values are accepted tells a client nothing
of the policy's numbers.

    unlearn_targets    str or list of str: more names/phrases to forbid (the request is guarded)
    unlearn_guard      true: guard this request even if the classifier would not flag it
    unlearn_threshold  float in [-1, 1], at most the policy's threshold: flag more readily
    unlearn_penalty    float in [0, 10000], at least the policy's penalty strength: penalise harder
    unlearn_top_k      int in [1, 1000], at least the policy's top_k: guard against more retrieved items
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from .classifier import Decision, PromptClassifier, UserTurn, spelled_out
from .decode import Refusal, RequestGuard
from .penalty import dense_penalty
from .phrases import near_misses
from .policy import Policy, load_policy, read_meta, verified_meta
from .quotes import Aliases, QuoteFilter
from .reload import PolicyWatch, signature
from .textmatch import TextMatcher, TokenTexts, normalise
from .trie import TokenTrie, token_sequences
from .union import MatcherDifference, MatcherUnion, TrieDifference, TrieUnion
from .withheld import CheckPhrases, Withheld

log = logging.getLogger("unlearnkit.guard")

POLICY_ENV = "UNLEARN_GUARD_POLICY"
FQCN = "unlearnkit.guard.vllm_plugin:UnlearnGuard"   # the class to give vLLM (--logits-processors)
PREFIX = "unlearn_"
SPELLED_MIN = 8      # letters a full name needs to be matched spelled out
GLUED_MIN = 6        # letters a distinctive name part needs to be matched inside a word too ("xVorlon")
PRIME_TOKENS = 32   # prompt tokens a guard reads at least before the output (a phrase begun in the prompt)
ARGS = ("unlearn_targets", "unlearn_guard", "unlearn_threshold", "unlearn_penalty", "unlearn_top_k")


@dataclass(frozen=True)
class RequestArgs:
    targets: tuple[str, ...] = ()
    force: bool = False
    threshold: Optional[float] = None
    penalty: Optional[float] = None
    top_k: Optional[int] = None


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{key} must be a number, got {value!r}")
    try:
        out = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"{key} must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{key} must be finite, got {value!r}")
    return out


def parse_request_args(extra_args: Optional[dict], meta: dict) -> RequestArgs:
    """Validate the `unlearn_*` keys of a request against the server's policy (policy.json)."""
    if not extra_args:
        return RequestArgs()
    if not isinstance(extra_args, dict):
        raise ValueError("vllm_xargs must be an object")
    ours = {k: v for k, v in extra_args.items() if isinstance(k, str) and k.startswith(PREFIX)}
    unknown = sorted(set(ours) - set(ARGS))
    if unknown:
        raise ValueError(f"unknown unlearning argument(s) {unknown}; valid: {list(ARGS)} "
                         "(a request may tighten the server's unlearning policy, never loosen or switch it off)")
    cfg, cal = meta["config"], meta["calibration"]
    out: dict = {}
    if "unlearn_targets" in ours:
        value = ours["unlearn_targets"]
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"unlearn_targets must be a string or a list of strings, got {ours['unlearn_targets']!r}")
        value = [v.strip() for v in value if v.strip()]
        if any(len(v) > 200 for v in value) or len(value) > 64:
            raise ValueError("unlearn_targets: at most 64 targets of at most 200 characters each")
        out["targets"] = tuple(value)
    if "unlearn_guard" in ours:
        value = ours["unlearn_guard"]
        if value in (True, 1, "true", "True", "1"):
            out["force"] = True
        elif value in (False, 0, "false", "False", "0"):
            raise ValueError("unlearn_guard=false: a request cannot switch the server's unlearning guard off")
        else:
            raise ValueError(f"unlearn_guard must be true, got {value!r}")
    if "unlearn_threshold" in ours:
        value = _number("unlearn_threshold", ours["unlearn_threshold"])
        if not -1.0 <= value <= 1.0:
            raise ValueError("unlearn_threshold must be between -1 and 1 (a cosine similarity)")
        out["threshold"] = min(value, float(cal["threshold"]))
    if "unlearn_penalty" in ours:
        value = _number("unlearn_penalty", ours["unlearn_penalty"])
        if not 0.0 <= value <= 1e4:
            raise ValueError("unlearn_penalty must be between 0 and 10000")
        if float(cfg["penalty"]) > 0:   # a policy without a semantic penalty has nothing to strengthen
            out["penalty"] = max(value, float(cfg["penalty"]))
    if "unlearn_top_k" in ours:
        value = ours["unlearn_top_k"]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise ValueError("unlearn_top_k must be an integer between 1 and 1000")
        out["top_k"] = max(value, int(cfg["top_k"]))
    return RequestArgs(**out)


_META_CACHE: dict[str, PolicyWatch] = {}


def policy_meta_from_env() -> Optional[dict]:
    """policy.json of the policy named by $UNLEARN_GUARD_POLICY: what the front end needs (read again
    when the directory is replaced: guard/reload.py)."""
    root = os.environ.get(POLICY_ENV)
    if not root:
        return None
    if root not in _META_CACHE:
        # a replacement is adopted once its files verify (the engine loads the same files)
        sig = signature(root)
        _META_CACHE[root] = PolicyWatch(root, lambda: verified_meta(root), read_meta(root), sig, background=False)
    return _META_CACHE[root].get()


def validate_sampling_params(extra_args: Optional[dict]) -> None:
    """For the adapters' `validate_params`: ValueError (HTTP 400) for bad `unlearn_*` arguments."""
    if not extra_args or not any(isinstance(k, str) and k.startswith(PREFIX) for k in extra_args):
        return
    meta = policy_meta_from_env()
    if meta is None:
        raise ValueError("this server has no unlearning policy; unlearn_* arguments are not accepted")
    parse_request_args(extra_args, meta)


def _with_words(phrases: Sequence[str]) -> list[str]:
    """Request-added targets: each phrase, and each of its words of four or more letters."""
    return list(phrases) + [w for phrase in phrases for w in phrase.split() if len(w) >= 4]


def _short(phrases: Sequence[str]) -> tuple[str, ...]:
    """Request-added phrases too short for the text matcher (under four characters)."""
    return tuple(p for p in phrases if len(p.strip()) < 4)


def _text_matcher(phrases: Sequence[str], texts: TokenTexts) -> TextMatcher:
    """Phrases of four or more characters (as a prefix, a shorter one would block longer words)."""
    return TextMatcher([p for p in phrases if len(p.strip()) >= 4], texts)


def prime_window(prompt: list[int], guard: RequestGuard) -> tuple[list[int], list[int]]:
    """What a guard reads of a prompt before the output: (for its trie, the last PRIME_TOKENS tokens; for its
    character-level matchers, as far back as it takes to hold more letters than the guard's longest phrase).
    Padding is not read: tokens without text (special tokens), runs of byte tokens that spell only invisible
    characters (zero-width spaces) and all but one of a run of separator-only tokens are skipped, so padding
    can neither push a name begun in the prompt out of view nor make the guard read a long prompt token by
    token. The prompt's last three byte tokens are kept whatever they spell (the output may finish their character)."""
    tail = prompt[-PRIME_TOKENS:]
    matchers = guard.matchers()
    if not matchers:
        return tail, tail
    texts, need = matchers[0].texts, max(m.longest for m in matchers) + 1
    kept: list[int] = []           # backwards
    run: list[int] = []            # a run of byte tokens (parts of characters), backwards
    letters, at, separated = 0, len(prompt), False     # separated: the last token kept is a separator
    run_end = len(prompt)          # where the current run ends

    def close_run() -> int:
        visible = sum(c.isalnum() for c in texts.decoded(run[::-1]))
        if visible:
            kept.extend(run)
        elif run_end == len(prompt):   # the prompt's last tokens: a character they begin (3 bytes at most)
            kept.extend(run[:3])
        run.clear()
        return visible

    while at > 0 and letters < need:
        at -= 1
        tok = int(prompt[at])
        if tok in texts.opening or tok in texts.finishing:
            if not run:
                run_end = at + 1
            run.append(tok)
            separated = False
            continue
        if run:
            letters += close_run()
        text = texts.text[tok] if 0 <= tok < len(texts.text) else ""
        if text.strip():
            kept.append(tok)
            letters += len(text) - text.count(" ")
            separated = False
        elif text:                    # a separator, read once per run of them
            if not separated:
                kept.append(tok)
            separated = True
    if run:
        close_run()
    return tail, kept[::-1]


class GuardRuntime:
    """Policy + classifier + per-request guards, for one engine."""

    def __init__(self, policy: Policy, tokenizer, cache_size: int = 256):
        self.policy = policy
        self.tokenizer = tokenizer
        self.classifier = PromptClassifier(policy)
        self.user_turn = UserTurn(tokenizer)
        self.vocab_size = max(len(tokenizer), policy.meta["tokenizer"].get("vocab_size", 0))
        refusal = tokenizer(policy.config.refusal, add_special_tokens=False)["input_ids"]
        eos = tokenizer.eos_token_id
        self.refusal = list(refusal) + ([eos] if eos is not None else [])
        later = tokenizer("\n\n" + policy.config.refusal, add_special_tokens=False)["input_ids"]
        self.mid_answer = Refusal(self.refusal, list(later) + ([eos] if eos is not None else []))
        self.eos = eos
        self.token_texts = TokenTexts(tokenizer)
        self.spelled_texts = self.token_texts.spelled()
        self._matchers: OrderedDict = OrderedDict()
        self._tries: OrderedDict = OrderedDict()
        self._penalties: OrderedDict = OrderedDict()
        self._exempt: OrderedDict = OrderedDict()
        self.cache_size = cache_size
        self.stats = {"requests": 0, "flagged": 0, "failed": 0}
        self.soft_mask = policy.soft_mask   # calibrated mode (calibrate.py): matched tokens lowered, not withheld
        # calibrated mode: whether the fit kept the policy's semantic penalty under the mask
        self.calibrated_penalty = bool(policy.meta["calibration"].get("semantic_penalty", False))
        self.name_probes = self._name_probes()
        self.name_sequences = self._name_sequences(self.name_probes)
        self.full_names = self._full_names()
        self.names = self._names_check()
        self.check_phrases = CheckPhrases([*self.name_probes, *self.full_names])   # what the names check matches
        # a corpus policy's quote filter, on every request (quotes.py); a takedown policy has nothing else
        self.quotes = (QuoteFilter(policy.quotes, Aliases(tokenizer, self.vocab_size))
                       if policy.quotes is not None else None)
        self._no_trie = TokenTrie()

    def _distinct_targets(self) -> list[dict]:
        """Targets with a distinctive word. One whose only probe is its name (e.g. "African American":
        every word occurs in ordinary prompts) is forbidden for flagged requests only."""
        return [t for t in self.policy.targets if len(t.get("probes", [])) > 1]

    def _name_probes(self) -> list[str]:
        probes = [p for target in self._distinct_targets() for p in target["probes"]]
        return [p for p in dict.fromkeys(probes) if len(p.strip()) >= 4]

    def _name_sequences(self, probes: Sequence[str]) -> list[list[int]]:
        """The names check's token sequences of `probes`, at word starts only: it runs on every
        request, and a piece such as "ines" ends ordinary words; the text matcher finds a name at a
        word start without a space. One rule for the check and for what calibrated mode exempts."""
        return token_sequences(self.tokenizer, probes, word_starts_only=True)

    def _names_check(self) -> Optional[tuple[TokenTrie, TextMatcher, Optional[TextMatcher]]]:
        """The always-on output check: every distinctive target's name and distinctive name parts
        (its lexical probes), forbidden in every request's output, flagged or not, so a classifier
        miss is not a full bypass; and the full names spelled out letter by letter ("K-a-l-o
        M-i-r-t-e-n"; names of at least SPELLED_MIN letters, so that ordinary text does not spell
        one by chance). Name parts of at least GLUED_MIN letters are matched inside words too, so a
        part glued to the word before it ("booksByMirten") is withheld like one that starts a word.
        None for a policy without targets (e.g. a set of news facts)."""
        if not self.name_probes:
            return None
        full = self.full_names
        spelled = TextMatcher(full, self.spelled_texts, spelled=True) if full else None
        text = TextMatcher(self.name_probes, self.token_texts)
        glued = [p for p in self.name_probes if " " not in p.strip() and len(normalise(p).strip()) >= GLUED_MIN]
        if glued:    # a name part glued to the word before it, which the word-start matcher does not see
            text = MatcherUnion(text, TextMatcher(glued, self.token_texts, anywhere=True))
        return TokenTrie(self.name_sequences), text, spelled

    def _full_names(self) -> list[str]:
        """The names the names check also matches spelled out letter by letter: full names and single
        distinctive parts ("Mirrvaskdov" alone) of at least SPELLED_MIN letters."""
        names = [t["name"] for t in self._distinct_targets()]
        parts = [p for p in self.name_probes if " " not in p.strip()]
        return [n for n in dict.fromkeys(names + parts) if len(normalise(n).replace(" ", "")) >= SPELLED_MIN]

    def _withheld(self, whole: str, targets: Sequence[int], named: Sequence[int]) -> Optional[Withheld]:
        """Calibrated mode: the names check over one request, less what it may lower instead of
        withholding (withheld.py): the phrases of `targets` its prompt (`whole`) spells out itself,
        and every name of a target with at most half as many forget items that shares one with a
        target the prompt names (`named`, the classifier's lexical hits, of which it wrote a phrase):
        facts about the subject asked about. None for a policy without names."""
        if self.names is None:
            return None
        phrases = {t: self._check_phrases_of(t) for t in targets}
        written = spelled_out(whole, [p for ps in phrases.values() for p in ps])
        named = {t for t in named if written.intersection(phrases.get(t, ()))}
        allowed = written.union(*(self._check_phrases_of(t) for t in self._details_of(named)))
        return self._cached(self._exempt, tuple(sorted(allowed)), lambda: self._names_less(allowed)).fresh()

    def _details_of(self, named: set[int]) -> set[int]:
        """Targets that share a forget item with a named one and have at most half as many items (a
        book title beside its author; not the author beside the book, nor another author)."""
        items = self.classifier.target_items
        return {t for n in named for i in items[n] for t in self.classifier.item_targets[i]
                if t not in named and 2 * len(items[t]) <= len(items[n])}

    def _check_phrases_of(self, target: int) -> list[str]:
        """The phrases of one target that the names check matches (none for a target without a
        distinctive word)."""
        t = self.policy.targets[target]
        return [p for p in dict.fromkeys([*t.get("probes", []), t["name"]]) if p in self.check_phrases]

    def _names_less(self, allowed: set[str]) -> Withheld:
        """The names check's structures less the exempt phrases of `allowed` (set differences,
        union.py), beside a matcher of the names that run on past an exempt one (withheld.py)."""
        exempt = self.check_phrases.exempt(allowed)
        if not exempt:
            return Withheld(self.names[0], list(self.names[1:]))
        probes = [p for p in exempt if p in self.name_probes]
        full = [p for p in exempt if p in self.full_names]
        trie = TrieDifference(self.names[0], TokenTrie(self._name_sequences(probes)))
        text = MatcherDifference(self.names[1], TextMatcher(probes, self.token_texts))
        spelled = self.names[2]
        if spelled is not None and full:
            spelled = MatcherDifference(spelled, TextMatcher(full, self.spelled_texts, spelled=True))
        runs_on = self.check_phrases.overlapping(exempt)
        runs_on_full = [p for p in runs_on if p in self.full_names]
        overlapping = [TextMatcher(runs_on, self.token_texts) if runs_on else None,
                       TextMatcher(runs_on_full, self.spelled_texts, spelled=True) if runs_on_full else None]
        return Withheld(trie, [text, spelled, *overlapping])

    def warm_up(self, max_targets: int = 64) -> None:
        """Load the classifier's embedder and build each target's trie now (the usual flagged request
        touches one target), so the first requests do not pay for either."""
        if self.policy.items:      # a takedown policy classifies nothing
            self.classifier.warm_up()
        for t in range(min(max_targets, len(self.policy.targets))):
            targets, items = self.classifier.expand({t}, set())
            self._trie(items, targets)
            self._matcher(items, targets)
        if self.names is not None:   # the shared names check's start-state sets (every target's names)
            self.names[0].blocked(frozenset())
            for matcher in self.names[1:]:
                if matcher is not None:
                    matcher.blocked(matcher.start)

    @classmethod
    def load(cls, root: str, tokenizer_path: str) -> "GuardRuntime":
        """The runtime for the policy at `root`, verified against the model's tokenizer and warmed up."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        policy = load_policy(root, tokenizer)
        log.info("unlearning guard: policy %s, %d targets, %d items, threshold %.3f", root,
                 len(policy.targets), len(policy.items), policy.threshold)
        runtime = cls(policy, tokenizer)
        runtime.warm_up()   # in an engine, before the first request
        return runtime

    @classmethod
    def from_env(cls, tokenizer_path: str) -> Optional["GuardRuntime"]:
        """The runtime for $UNLEARN_GUARD_POLICY as it is now (not watched), or None when it is not set."""
        root = os.environ.get(POLICY_ENV)
        return cls.load(root, tokenizer_path) if root else None

    # ------------------------------------------------------------------ per request
    def prompt_parts(self, prompt_ids: Sequence[int]) -> tuple[str, list[str]]:
        """(the whole decoded prompt, its user messages) — what the classifier reads."""
        whole = self.tokenizer.decode(list(prompt_ids), skip_special_tokens=False)
        return whole, self.user_turn.segments(whole)

    def user_text(self, prompt_ids: Sequence[int]) -> str:
        return self.prompt_parts(prompt_ids)[1][-1]

    def _cached(self, cache: OrderedDict, key, make):
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = cache[key] = make()
        if len(cache) > self.cache_size:
            cache.popitem(last=False)
        return value

    def _trie(self, items: tuple[int, ...], targets: tuple[int, ...], extra: tuple[str, ...] = ()):
        """The request's own sequences, cached per (items, targets, short extra phrases), beside the
        names check's trie (built once and shared, union.py: a flagged, forced or tightened request
        keeps the names check without rebuilding it)."""
        def make():
            trie = TokenTrie()
            for i in items:
                for seq in self.policy.item_sequences[i]:
                    trie.add(seq)
                for digit in self.policy.items[i].get("number_heads", ()):   # numbers' first digits, after a space
                    for seq in self.policy.number_starts.get(digit, ()):
                        trie.add(seq)
            for t in targets:
                for seq in self.policy.target_sequences[t]:
                    trie.add(seq)
            for seq in token_sequences(self.tokenizer, _short(extra)):
                trie.add(seq)
            return TrieUnion(trie, self.names[0]) if self.names is not None else trie
        # request-added phrases of 4+ characters are matched by the text matcher alone (on characters,
        # so every token split and case is covered): tokenising all their variants for the trie cost
        # ~40 ms per request with 64 fresh targets, inside the engine's step loop. Shorter ones (which
        # the text matcher skips: as a prefix "it" would block "itself") go in the trie as before.
        return self._cached(self._tries, (items, targets, _short(extra)), make)

    def _matcher(self, items: tuple[int, ...], targets: tuple[int, ...]):
        """The phrases of `items` and `targets`, cached per (items, targets), beside the names
        check's matcher (built once and shared, union.py). In strict mode, the near misses of the
        targets' names too."""
        def make():
            phrases = [p for i in items for p in self.policy.items[i]["phrases"]]
            phrases += [p for t in targets for p in self.policy.targets[t].get("phrases", [self.policy.targets[t]["name"]])]
            if self.soft_mask is None:
                phrases += self._near_misses(targets)
            own = _text_matcher(phrases, self.token_texts)
            return MatcherUnion(own, self.names[1]) if self.names is not None else own
        return self._cached(self._matchers, (items, targets), make)

    def _near_misses(self, targets: tuple[int, ...]) -> list[str]:
        """The spellings one edit from the targets' distinctive name parts (phrases.near_misses), less
        the model's whole-word tokens and, for those shorter than the part, any start of one: withheld, a
        model that was about to write "Basil" cannot write "Bacil" instead (a mangled name reads as a
        malfunction, and names the person all the same), while "basic" and "basis" (which "basi" begins)
        stay free."""
        words, starts = self._vocabulary_words
        parts = [p for t in targets if len(self.policy.targets[t].get("probes", [])) > 1
                 for p in self.policy.targets[t]["probes"] if " " not in p.strip()]
        shortest = min((len(p) for p in parts), default=0)
        return [v for v in dict.fromkeys(v for p in parts for v in near_misses(p))
                if v not in words and not (len(v) < shortest and v in starts)]

    @functools.cached_property
    def _vocabulary_words(self) -> tuple[frozenset, frozenset]:
        """The vocabulary's whole-word tokens (" basis"), and every start of one ("basi")."""
        words = frozenset(t[1:] for t in self.token_texts.text if t.startswith(" ") and t[1:].isalpha())
        return words, frozenset(w[:k] for w in words for k in range(1, len(w)))

    def _spelled(self, targets: tuple[int, ...], requested: tuple[str, ...] = ()):
        """The names check's spelled-out matcher, with the full names of `targets` that it leaves out (a name
        made of common words, "African American", is forbidden for flagged requests only) and the request's
        own targets (the agent front's live targets among them), so a flagged answer cannot write those
        backwards, in leetspeak or letter by letter either. Cached per targets."""
        shared = self.names[2] if self.names is not None else None
        names = [self.policy.targets[t]["name"] for t in targets if self.policy.targets[t]["name"] not in self.full_names]
        extra = [n for n in names + _with_words(requested) if len(normalise(n).replace(" ", "")) >= SPELLED_MIN]
        if not extra:
            return shared

        def make():
            own = TextMatcher(extra, self.spelled_texts, spelled=True)
            return MatcherUnion(own, shared) if shared is not None else own
        return self._cached(self._matchers, ("spelled", targets, requested), make)

    def _request_matcher(self, extra: tuple[str, ...]) -> TextMatcher:
        """A request's own phrases (`unlearn_targets`: the agent front's live targets among them) in a
        small matcher of their own, so a fresh set never rebuilds the big cached one: at word starts,
        and their words of GLUED_MIN+ letters inside words too, as the policy's names are."""
        def make():
            words = _with_words(extra)
            plain = _text_matcher(words, self.token_texts)
            glued = [w for w in words if " " not in w.strip() and len(normalise(w).strip()) >= GLUED_MIN]
            return MatcherUnion(plain, TextMatcher(glued, self.token_texts, anywhere=True)) if glued else plain
        return self._cached(self._matchers, ("request", extra), make)

    def _penalty(self, targets: tuple[int, ...], strength: Optional[float], temperature: float = 1.0) -> Optional[torch.Tensor]:
        """The targets' penalty at `strength` (default: the policy's), multiplied by the request's
        temperature when it is above 1: the sampler divides the logits by the temperature after
        the guard, and the penalty must not come out weaker than the policy's."""
        base = float(self.policy.config.penalty)
        if not targets or base <= 0:
            return None
        scale = ((strength / base) if strength else 1.0) * max(1.0, temperature)
        return self._cached(self._penalties, (targets, scale), lambda: dense_penalty(
            self.vocab_size, [self.policy.penalties[t] for t in targets], scale))

    def guard_for(self, decision: Decision, args: RequestArgs, temperature: float = 1.0,
                  prompt: Sequence[int] = ()) -> Optional[RequestGuard]:
        """A flagged (or tightened) request's full guard; else the always-on names check (or None
        when the policy has no targets). `prompt`: its token ids (in calibrated mode, the names
        they write are lowered rather than withheld)."""
        if not (decision.flagged or args.force or args.targets):
            if self.names is None:
                return None
            return RequestGuard(self.names[0], text=self.names[1], spelled=self.names[2], fallback=self.eos,
                                always_on=True, refusal=self._refusal_if_strict())
        targets, items = decision.targets, decision.items
        if not decision.flagged and args.force:   # guarded on request: against its nearest items
            targets, items = self.classifier.expand(set(), set(decision.nearest))
        extra = self._request_matcher(args.targets) if args.targets else None
        # calibrated mode: the semantic penalty only where the policy keeps it under the mask (a fixed penalty
        # over an already forgetting model moves the ratios the fit matched). A request that asks for a
        # penalty (unlearn_penalty: tightening) always gets it.
        wants_penalty = self.soft_mask is None or self.calibrated_penalty or args.penalty is not None
        penalty = self._penalty(targets, args.penalty, temperature) if wants_penalty else None
        withheld = (self._withheld(self.tokenizer.decode(list(prompt), skip_special_tokens=False), targets, decision.named)
                    if self.soft_mask is not None else None)
        return RequestGuard(self._trie(items, targets, args.targets), penalty=penalty,
                            text=self._matcher(items, targets), spelled=self._spelled(targets, args.targets),
                            extra=extra, fallback=self.eos, soft=self.soft_mask, withheld=withheld,
                            refusal=self._refusal_if_strict())

    def _refusal_if_strict(self) -> Optional[Refusal]:
        """What a strict guard answers once its model heads into a withheld name (calibrated mode lowers
        names like any fact instead: its answers are the fit's)."""
        return self.mid_answer if self.soft_mask is None else None

    def decide(self, prompts: list[Sequence[int]], args: list[RequestArgs]) -> list[Decision]:
        """Classify a batch; requests that share a threshold/top_k are embedded together."""
        if not self.policy.items:   # a takedown policy: no classifier (its quote filter guards every request)
            return [Decision(False, float("nan"), "no classifier (quote filter only)") for _ in prompts]
        texts = [self.prompt_parts(p) for p in prompts]
        out: list[Optional[Decision]] = [None] * len(prompts)
        groups: dict = {}
        for n, a in enumerate(args):
            groups.setdefault((a.threshold, a.top_k), []).append(n)
        for (threshold, top_k), members in groups.items():
            for n, d in zip(members, self.classifier.classify([texts[n] for n in members], threshold, top_k)):
                out[n] = d
        return out

    def guards(self, requests: Sequence[tuple]) -> list[Optional[RequestGuard]]:
        """One guard (or None) per newly admitted request: (prompt token ids, extra_args) or
        (prompt token ids, extra_args, temperature). Each guard has already read the end of its
        prompt, so a prompt that stops inside a forbidden phrase (an assistant prefill, a
        completion prompt) cannot have the rest of it sampled."""
        if not requests:
            return []
        prompts = [r[0] for r in requests]
        temperatures = [float(r[2]) if len(r) > 2 and r[2] is not None else 1.0 for r in requests]
        args: list[Optional[RequestArgs]] = []
        for request in requests:
            try:
                args.append(parse_request_args(request[1], self.policy.meta))
            except (ValueError, OverflowError):  # validated at admission already: refuse, never loosen
                args.append(None)
        self.stats["requests"] += len(requests)
        try:
            decisions = self.decide(prompts, [a or RequestArgs() for a in args])
        except Exception:  # retry one by one, so one bad request does not refuse its neighbours
            decisions = [self._decide_one(p, a or RequestArgs()) for p, a in zip(prompts, args)]
        out = [self._guard_or_refuse(d, a, t, p) for d, a, t, p in zip(decisions, args, temperatures, prompts)]
        for guard, prompt in zip(out, prompts):
            if guard is not None and guard.forced is None and prompt:
                guard.prime(*prime_window(list(prompt), guard))
        out = [self._with_quotes(g, p) for g, p in zip(out, prompts)]
        self.stats["flagged"] += sum(g is not None and not g.always_on for g in out)
        return out

    def _with_quotes(self, guard: Optional[RequestGuard], prompt: Optional[Sequence[int]]) -> Optional[RequestGuard]:
        """The request's guard with the policy's quote filter (a bare guard where it had none), primed with
        the prompt's last τ tokens, so a prompt ending inside a quote cannot have it continued."""
        if self.quotes is None or (guard is not None and guard.forced is not None):
            return guard
        if guard is None:
            guard = RequestGuard(self._no_trie, fallback=self.eos, always_on=True)
        guard.quotes = self.quotes.state()
        guard.quotes.feed(list(prompt or ())[-self.quotes.tau:])
        return guard

    def _guard_or_refuse(self, decision: Optional[Decision], args: Optional[RequestArgs],
                         temperature: float = 1.0, prompt: Optional[Sequence[int]] = None) -> Optional[RequestGuard]:
        """The request's guard; a forced refusal when it could not be classified, its arguments are
        invalid, or building its guard fails (fail closed, logged)."""
        if decision is not None and args is not None:
            try:
                return self.guard_for(decision, args, temperature, prompt or ())
            except Exception:
                log.exception("unlearning guard: building a request's guard failed; refusing it (fail closed)")
        elif args is None:
            log.error("unlearning guard: a request reached the engine with invalid unlearn_* arguments; refusing it")
        self.stats["failed"] += 1
        return RequestGuard(TokenTrie(), forced=self.refusal)

    def _decide_one(self, prompt: Optional[Sequence[int]], args: RequestArgs) -> Optional[Decision]:
        try:
            if prompt is None:
                raise ValueError("a request without prompt token ids (prompt embeddings) cannot be classified")
            return self.decide([prompt], [args])[0]
        except Exception:
            log.exception("unlearning guard: the classifier failed on a request; refusing it (fail closed)")
            return None


def watched_runtime(tokenizer_path: str) -> Optional[PolicyWatch]:
    """The runtime for $UNLEARN_GUARD_POLICY, loaded again when that directory is replaced (guard/reload.py);
    None when it is not set (the guard is inert). A bad policy raises here: the engine fails at start-up."""
    root = os.environ.get(POLICY_ENV)
    if not root:
        log.warning("%s is not set: the unlearning guard is inert", POLICY_ENV)
        return None
    sig = signature(root)     # before loading: a replacement during start-up is taken up after it
    return PolicyWatch(root, lambda: GuardRuntime.load(root, tokenizer_path), GuardRuntime.load(root, tokenizer_path),
                       sig)


def engine_runtime(vllm_config, runtime: Optional[GuardRuntime]) -> tuple[Optional[GuardRuntime], Optional[PolicyWatch]]:
    """What an adapter starts with: (the runtime, the watch that replaces it), or (`runtime`, None) when one
    is given (tests)."""
    if runtime is not None:
        return runtime, None
    watch = watched_runtime(vllm_config.model_config.tokenizer)
    return (watch.get() if watch is not None else None), watch
