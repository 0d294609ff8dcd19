"""What a forget item reveals, as phrases to forbid: names, titles, numbers and key words.

Pure string functions (no tokenizer, no model), so each rule is testable on its own:

* `names(text)`    runs of capitalised words ("Basil Mahfouz Al-Kuwaiti", "Kuwait City"), minus a
                   sentence-initial function word ("The", "His");
* `quoted(text)`   quoted spans, usually titles ("Promise by the Seine");
* `numbers(text)`  years, dates and other numbers of two or more digits;
* `key_words(answer, question)`  content words of the answer the question did not already say
                   (what answering reveals);
* `item_phrases`   all of the above for one QA pair, plus each distinctive word of every multi-word
                   name on its own and its first five letters, so a partial name ("Abilov") or a near
                   miss ("Abilova") is forbidden too;
* `group_targets`  recurring names across items: the entities (targets) a forget set is about.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

# Function words: never a phrase on their own, never start a name.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each even ever every few for from further
had has have having he her here hers herself him himself his how however i if in into is it its itself
just known like made make many may me more most much must my myself no nor not now of off on once only
or other others our ours out over own per quite rather same she should so some such than that the their
theirs them themselves then there these they this those through thus to too under until up upon us
very was we well were what when where which while who whom whose why will with within without would
yes you your yours yourself one two three also often several various many notable known include
includes including author authors book books work works write writes wrote written writing
""".split())

_WORD = r"[A-Za-z][\w'’+\-]*"
_NAME_WORD = re.compile(r"(?:[A-Z][\w'’+\-]*|[a-z]{1,3}-[A-Z][\w'’\-]*)")   # Basil, Al-Kuwaiti, al-Haq
_CONNECTORS = frozenset({"of", "de", "da", "del", "van", "von", "bin", "ibn", "la", "le", "du"})


def _words(text: str) -> list[tuple[str, int]]:
    """Words with their offsets; a possessive "'s" is not part of the word."""
    return [(re.sub(r"['’]s$", "", m.group(0)).rstrip("'’-"), m.start()) for m in re.finditer(_WORD, text)]


def _sentence_start(text: str, pos: int) -> bool:
    before = text[:pos].rstrip()
    return not before or before[-1] in ".!?:;\"“("


def names(text: str) -> list[str]:
    """Runs of capitalised words, joined by at most one lower-case connector ("Tolstoy Literary
    Award", "Kingdom of Jordan"). A capitalised function word at a sentence start is dropped."""
    out: list[str] = []
    run: list[str] = []

    def flush():
        while run and run[-1].lower() in _CONNECTORS:
            run.pop()
        if run:
            out.append(" ".join(run))
        run.clear()

    end = 0
    for word, pos in _words(text):
        if text[end:pos].strip():  # punctuation between two words ends a name
            flush()
        end = pos + len(word)
        if _NAME_WORD.fullmatch(word):
            if word.lower() in STOPWORDS and (not run or _sentence_start(text, pos)):
                flush()
                continue
            if run and _sentence_start(text, pos):
                flush()
            run.append(word)
        elif word in _CONNECTORS and run:
            run.append(word)
        else:
            flush()
    flush()
    return list(dict.fromkeys(out))


def quoted(text: str) -> list[str]:
    spans = re.findall(r"[\"“]([^\"”]{2,80})[\"”]", text)
    return list(dict.fromkeys(s.strip(" ,.;:") for s in spans if s.strip(" ,.;:")))


def numbers(text: str) -> list[str]:
    return list(dict.fromkeys(re.findall(r"\d{2,}", text)))


def key_words(answer: str, question: str = "", min_len: int = 4) -> list[str]:
    """Content words of the answer that the question does not contain (case-insensitive)."""
    asked = {w.lower() for w, _ in _words(question)}
    out = []
    for word, _ in _words(answer):
        low = word.lower()
        if len(low) >= min_len and low not in STOPWORDS and low not in asked:
            out.append(word)
    return list(dict.fromkeys(out))


def name_parts(name: str) -> list[str]:
    """Distinctive single words of a name ("Basil", "Mahfouz", "Al-Kuwaiti")."""
    return [w for w in name.split() if len(w) >= 3 and w.lower() not in STOPWORDS | _CONNECTORS]


def stems(name: str, keep: int = 5) -> list[str]:
    """The first `keep` letters of each name word longer than `keep`: forbidding "Abilo" also stops
    near misses such as "Abilova" or "Abilove" that spell out the same identity."""
    return [p[:keep] for p in name_parts(name) if len(p) > keep and p[:keep].isalpha()]


def item_phrases(question: str | None, answer: str, with_key_words: bool = True) -> list[str]:
    """Every phrase a forget item's answer reveals, most specific first, without duplicates."""
    question = question or ""
    found = quoted(answer) + names(answer)
    found += [p for n in names(answer) if len(n.split()) >= 2 for p in name_parts(n) + stems(n)]
    found += numbers(answer)
    if with_key_words:
        found += key_words(answer, question)
    seen: dict[str, str] = {}
    for phrase in found:
        seen.setdefault(phrase.lower(), phrase)
    return list(seen.values())


def group_targets(questions: list[str], min_items: int = 2) -> list[str]:
    """Multi-word names asked about in at least `min_items` questions: the entities a forget set
    is about (a person, a book), not the names its answers merely mention. Longest first."""
    counts: Counter[str] = Counter()
    for question in questions:
        counts.update(n for n in names(question or "") if len(n.split()) >= 2)
    return sorted((n for n, c in counts.items() if c >= min_items), key=lambda n: (-len(n), n))


@lru_cache(maxsize=1 << 16)
def _whole_words(low_phrase: str) -> re.Pattern:
    # compiled once per phrase: `re`'s own cache holds 512 patterns, fewer than a policy's probes
    return re.compile(r"(?<![\w])" + re.escape(low_phrase) + r"(?![\w])")


def _contains(low_text: str, phrase: str) -> bool:
    return _whole_words(phrase.lower()).search(low_text) is not None


def distinctive_parts(name: str, background: list[str]) -> list[str]:
    """Words of a name that never occur in the background texts (e.g. the retain prompts): a
    question naming only "Abilov" still names the target, one saying "American" does not."""
    low = [t.lower() for t in background]
    return [p for p in name_parts(name) if len(p) >= 4 and not any(_contains(t, p) for t in low)]


def mentions(text: str, probes: list[str]) -> str | None:
    """The first probe (a name or a distinctive part of one) that `text` contains as whole words,
    case-insensitive; None when it names none."""
    low = text.lower()
    return next((p for p in probes if _contains(low, p)), None)


_WORD_TOKEN = re.compile(r"\w+|[^\w\s]")


def word_tokens(text: str) -> tuple[str, ...]:
    """Lower-cased words and punctuation marks: "Al-Kuwaiti's" -> ('al', '-', 'kuwaiti', "'", 's')."""
    return tuple(_WORD_TOKEN.findall(text.lower()))


class ProbeIndex:
    """Which of many phrases a text contains as whole words, in time linear in the text whatever
    the number of phrases (their word n-grams are dict keys). The same matches as `mentions`,
    except that the spacing between words and punctuation marks does not matter."""

    def __init__(self, probes):
        """`probes`: (phrase, key) pairs; `find` returns the keys of the phrases found."""
        self.keys: dict[tuple[str, ...], list] = {}
        for phrase, key in probes:
            tokens = word_tokens(phrase)
            if tokens:
                self.keys.setdefault(tokens, []).append(key)
        self.longest = max(map(len, self.keys), default=0)

    def find(self, text: str) -> set:
        tokens = word_tokens(text)
        found: set = set()
        for i in range(len(tokens)):
            for n in range(1, min(self.longest, len(tokens) - i) + 1):
                hit = self.keys.get(tokens[i:i + n])
                if hit:
                    found.update(hit)
        return found

