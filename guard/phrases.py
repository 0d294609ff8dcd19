"""What a forget item reveals, as phrases to forbid: names, titles, numbers and key words.

Pure string functions (no tokenizer, no model), so each rule is testable on its own:

* `names(text)`    runs of capitalised words ("Basil Mahfouz Al-Kuwaiti", "Kuwait City"), minus a
                   sentence-initial function word ("The", "His");
* `quoted(text)`   quoted spans, usually titles ("Promise by the Seine");
* `numbers(text)`  numbers as written ("11,000", "7.4", "1990") of two or more digits;
* `number_heads(phrases)`  the first digits those numbers begin with (forget-mode corpus policies
                   withhold them after a space in flagged answers);
* `quantities(text)`  numbers, dates, percentages, money and quantities with their units, in every
                   surface form a model writes them ("11,000" / 11000 / 11 000, "12%" / 12 percent,
                   "3 March 2021" / March 3, 2021 / 2021-03-03, "3 days" / three days);
* `key_words(answer, question)`  content words of the answer the question did not already say
                   (what answering reveals);
* `item_phrases`   all of the above for one QA pair, plus each distinctive word of every multi-word
                   name on its own and its first five letters, so a partial name ("Abilov") or a near
                   miss ("Abilova") is forbidden too;
* `group_targets`  recurring names across items: the entities (targets) a forget set is about.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache
from typing import Optional

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
# titles and offices: part of a name as written ("First Minister Humza Yousaf"), never on their own
TITLES = frozenset("""
mr mrs ms miss dr prof professor sir dame lord lady president minister first prime secretary chancellor
king queen prince princess duke duchess general brig-gen gen col colonel captain major sergeant judge
justice senator governor mayor chief executive director chairman chair pope bishop archbishop saint st
""".split())
# a month or weekday alone is no name to forbid (a date is, see `dates`)
_CALENDAR = frozenset("""
january february march april may june july august september october november december
monday tuesday wednesday thursday friday saturday sunday
""".split())


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


# a number as written: thousands separators and a decimal part belong to it ("11,000", "7.4")
_NUMBER = re.compile(r"(?<![\d.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\d)")


def numbers(text: str) -> list[str]:
    """Numbers as written, whole ("11,000", "1.75", "7.4", "1990"), of two or more digits (one
    digit alone forbids too much of the language); "00" and zero-padded "08" are left out."""
    return list(dict.fromkeys(n for n in (m.group(0) for m in _NUMBER.finditer(text)) if _worth_alone(n)))


def number_heads(phrases: list[str]) -> list[str]:
    """The digits that begin the numbers among `phrases` ("7" of "7.4", "1" of "1.75 million hours").
    Withheld after a space, they stop an answer before a withheld number begins: withholding only the
    number's last token lets its first ones out ("7." of 7.4, which scores as half the number)."""
    return sorted({p.strip()[0] for p in phrases if p.strip()[:1].isdigit() and sum(c.isdigit() for c in p) >= 2})


def _worth_alone(n: str) -> bool:
    """Two or more digits, not all zeros, not a zero-padded part of a date or time ("08", "00")."""
    return sum(c.isdigit() for c in n) >= 2 and bool(n.strip("0,.")) and not (n[0] == "0" and n[1:2].isdigit())


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
_MONTH_NO = {m.lower(): i + 1 for i, m in enumerate(MONTHS)} | {m[:3].lower(): i + 1 for i, m in enumerate(MONTHS)} \
    | {"sept": 9}
# capitalised, as English writes months ("10 may be" is no date)
_MONTH = r"(?P<month>" + "|".join(sorted((m.title() for m in _MONTH_NO), key=len, reverse=True)) + r")\.?"
_ORD = r"(?:st|nd|rd|th)?"
_DAY_MONTH = re.compile(r"\b(?:the\s+)?(?P<day>\d{1,2})" + _ORD + r"(?:\s+of)?\s+" + _MONTH
                        + r"(?:,?\s+(?P<year>\d{4}))?\b")
_MONTH_DAY = re.compile(r"\b" + _MONTH + r"\s+(?:the\s+)?(?P<day>\d{1,2})" + _ORD
                        + r"\b(?:,?\s+(?P<year>\d{4})\b)?")
_MONTH_YEAR = re.compile(r"\b" + _MONTH + r",?\s+(?P<year>\d{4})\b")
_ISO_DATE = re.compile(r"\b(?P<year>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b")
_SLASH_DATE = re.compile(r"\b(?P<a>\d{1,2})/(?P<b>\d{1,2})/(?P<year>\d{4})\b")
_PERCENT = re.compile(r"(?<![\d.,])(?P<n>\d+(?:[.,]\d+)?)\s*(?:%|per\s?cent\b)", re.IGNORECASE)
_RANGE = re.compile(r"(?<![\d.,])(?P<a>\d+(?:\.\d+)?)\s*[-–/]\s*(?P<b>\d+(?:\.\d+)?)(?P<pct>\s*%)?(?![\d/])")
_SCALED = re.compile(r"(?<![\d.,])(?P<cur>[£$€])?(?P<n>\d+(?:\.\d+)?)\s*(?P<scale>thousand|million|billion|trillion"
                     r"|bn|mn|m|k)\b", re.IGNORECASE)
_AMOUNT = re.compile(r"(?<![\d.,])(?P<cur>[£$€])?(?P<n>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(?!\d)"
                     r"(?P<unit>[A-Za-z]+\b)?")
_CLOCK = re.compile(r"(?<![\d.,:])(?P<h>\d{1,2}):(?P<m>\d{2})(?![\d:])")
_SCALE = {"thousand": 10 ** 3, "k": 10 ** 3, "million": 10 ** 6, "m": 10 ** 6, "mn": 10 ** 6,
          "billion": 10 ** 9, "bn": 10 ** 9, "trillion": 10 ** 12}
_SCALE_WORD = {10 ** 3: "thousand", 10 ** 6: "million", 10 ** 9: "billion", 10 ** 12: "trillion"}
_SCALE_SHORT = {"thousand": "k", "million": "m", "billion": "bn", "trillion": "tn"}
_CURRENCY = {"£": "pounds", "$": "dollars", "€": "euros"}
# units written straight after a number ("3,800m", "20p", "100GB") and their long names
UNITS = {"m": ("metres", "meters"), "km": ("kilometres", "kilometers"), "ft": ("feet",), "kg": ("kilograms", "kilos"),
         "g": ("grams",), "p": ("pence",), "gb": ("gigabytes",), "mb": ("megabytes",), "tb": ("terabytes",),
         "mph": ("miles per hour",), "cm": ("centimetres", "centimeters"), "mm": ("millimetres", "millimeters")}
_LONG_UNIT = {long: short for short, longs in UNITS.items() for long in longs}
_SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_VALUE = {w: i for i, w in enumerate(_SMALL)} | {w: 20 + 10 * i for i, w in enumerate(_TENS)}
_NUMBER_WORD = re.compile(r"\b(?P<n>(?:" + "|".join(_TENS) + r")(?:[- ](?:" + "|".join(_SMALL[1:10]) + r"))?|"
                          + "|".join(sorted(_SMALL, key=len, reverse=True)) + r")(?P<sep>\s+|-)(?P<unit>[a-z]{3,})\b",
                          re.IGNORECASE)
_DIGITS_UNIT = re.compile(r"(?<![\d.,])(?P<n>\d+)(?P<sep>\s+|-)(?P<unit>[a-z]{3,})\b")


def number_word(n: int) -> str | None:
    """English words for 0..99 ("twenty-five"); None beyond."""
    if 0 <= n < 20:
        return _SMALL[n]
    if 20 <= n < 100:
        tens, ones = _TENS[n // 10 - 2], n % 10
        return tens + (f"-{_SMALL[ones]}" if ones else "")
    return None


def _word_value(words: str) -> int:
    parts = re.split(r"[- ]", words.lower())
    return sum(_WORD_VALUE[p] for p in parts)


def _grouped(n: int, sep: str) -> str:
    return f"{n:,}".replace(",", sep)


def number_forms(written: str) -> list[str]:
    """A number in the forms a model writes it: "11,000" -> 11,000 / 11000 / 11 000 / 11.000 /
    11k / 11 thousand; "7.4" -> 7.4 / 7,4. Four-digit numbers without a separator (years) stay as
    they are."""
    plain = written.replace(",", "")
    forms = [written]
    if "." in plain:                                   # a decimal
        return forms + [plain, plain.replace(".", ",")]
    value = int(plain)
    if "," in written or len(plain) >= 5:
        forms += [plain] + [_grouped(value, sep) for sep in (",", " ", ".")]
        for scale, word in sorted(_SCALE_WORD.items(), reverse=True):
            # 1,750,000 -> 1.75 million; 11,000 -> 11 thousand (thousands only when round)
            if value >= scale and value % (scale // 100 if scale > 1000 else scale) == 0:
                short = f"{value / scale:.2f}".rstrip("0").rstrip(".")
                forms += [f"{short} {word}", f"{short}{_SCALE_SHORT[word]}"]
                break
    return list(dict.fromkeys(forms))


def _date_forms(day: int | None, month: int, year: str | None) -> list[str]:
    name = MONTHS[month - 1]
    abbr = name[:3]
    if day is None:
        return [f"{name} {year}", f"{abbr} {year}", f"{year}-{month:02d}"]
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    out = [f"{day} {name}", f"{name} {day}", f"{day}{suffix} {name}", f"{day}{suffix} of {name}",
           f"{name} {day}{suffix}", f"{day} {abbr}", f"{abbr} {day}"]
    if year:
        out = [f"{d} {year}" for d in out[:5]] + [f"{name} {day}, {year}", f"{name} {day}{suffix}, {year}",
                                                   f"{abbr} {day}, {year}", f"{day} {abbr} {year}",
                                                   f"{year}-{month:02d}-{day:02d}", f"{day}/{month}/{year}",
                                                   f"{month}/{day}/{year}", f"{day:02d}/{month:02d}/{year}",
                                                   f"{month:02d}/{day:02d}/{year}", f"{day}.{month}.{year}"]
    return out


def dates(text: str) -> list[str]:
    """Dates in every common surface form: "March 3, 2021", "3 March 2021", "the 3rd of March,
    2021", "2021-03-03", "03/03/2021" all give the same forms (a slash date is read both ways); a
    day and month without a year ("15 April") and a month and year ("April 2022") too."""
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    for pattern in (_DAY_MONTH, _MONTH_DAY):
        for m in pattern.finditer(text):
            day, month = int(m.group("day")), _MONTH_NO[m.group("month").lower()]
            if 1 <= day <= 31:
                out += _date_forms(day, month, m.group("year"))
                spans.append(m.span())
    for m in _MONTH_YEAR.finditer(text):
        if not any(a <= m.start() < b for a, b in spans):
            out += _date_forms(None, _MONTH_NO[m.group("month").lower()], m.group("year"))
    for m in _ISO_DATE.finditer(text):
        month, day = int(m.group("m")), int(m.group("d"))
        if 1 <= month <= 12 and 1 <= day <= 31:
            out += [m.group(0)] + _date_forms(day, month, m.group("year"))
    for m in _SLASH_DATE.finditer(text):
        a, b = int(m.group("a")), int(m.group("b"))
        out.append(m.group(0))
        for day, month in ((a, b), (b, a)):
            if 1 <= month <= 12 and 1 <= day <= 31:
                out += _date_forms(day, month, m.group("year"))
    return list(dict.fromkeys(out))


def _unit_forms(n: str, unit: str, value: int | None) -> list[str]:
    """ "3 days" / "three days" / "3-day" ...; a unit with a short form both ways ("100 gigabytes" /
    "100GB")."""
    one = unit[:-1] if unit.endswith("s") and len(unit) > 3 else unit     # "3-day", as an adjective
    out = [f"{n} {unit}", f"{n}-{one}"]
    word = number_word(value) if value is not None else None
    if word:
        out += [f"{word} {unit}", f"{word}-{one}"] + ([f"{word.replace('-', ' ')} {unit}"] if "-" in word else [])
    short = _LONG_UNIT.get(unit.lower())
    if short:
        out += [f"{n}{short}", f"{n} {short}"]
    return out


def _percent_forms(text: str) -> list[str]:
    out = []
    for m in _PERCENT.finditer(text):
        n = m.group("n")
        for form in dict.fromkeys([n, n.replace(",", "."), n.replace(".", ",")]):
            out += [f"{form}%", f"{form} %", f"{form} percent", f"{form} per cent"]
    return out


def _range_forms(text: str, taken: list) -> list[str]:
    """Ranges outside the spans `taken` (dates, times), whose spans are added to `taken`."""
    out = []
    for m in _RANGE.finditer(text):
        if _inside(m, taken):
            continue
        a, b, pct = m.group("a"), m.group("b"), "%" if m.group("pct") else ""
        seps = ["-", "–", "/", " to "]
        out += [f"{a}{sep}{b}{pct}" for sep in (seps[:3] if len(b) < len(a) else seps)]
        if len(a) == 4 and len(b) == 2 and a.isdigit() and b.isdigit():   # "2002-03": a season, a span of years
            out += [f"{a}{sep}{a[:2]}{b}" for sep in seps]
        if pct:
            out += [f"{a}{sep}{b} percent" for sep in ("-", " to ")]
        taken.append(m.span())
    return out


def _scaled_forms(text: str) -> list[str]:
    out = []
    for m in _SCALED.finditer(text):
        n, scale, cur = m.group("n"), m.group("scale").lower(), m.group("cur") or ""
        if scale == "m" and not cur:
            continue                                   # "5m" without a currency: metres (below)
        value = round(float(n) * _SCALE[scale])
        word = _SCALE_WORD[_SCALE[scale]]
        forms = [f"{n} {word}", f"{n}{_SCALE_SHORT[word]}", f"{n} {_SCALE_SHORT[word]}",
                 _grouped(value, ","), str(value), _grouped(value, " ")]
        out += [cur + f for f in forms if cur] + forms
    return out


def _amount_forms(text: str, taken: list) -> list[str]:
    out = []
    for m in _AMOUNT.finditer(text):
        if _inside(m, taken):
            continue
        n, cur, unit = m.group("n"), m.group("cur") or "", (m.group("unit") or "")
        forms = number_forms(n) if _worth_alone(n) else []
        if cur:
            forms = [cur + f for f in forms or [n]] + forms
            out += [f"{f} {_CURRENCY[cur]}" for f in number_forms(n)]
        if unit.lower() in UNITS:
            out += [f"{n}{unit}", f"{n} {unit}"] + [f"{n} {long}" for long in UNITS[unit.lower()]]
        out += forms
    return out


def _clock_forms(text: str) -> list[str]:
    out = []
    for m in _CLOCK.finditer(text):
        h, mins = int(m.group("h")), m.group("m")
        if h < 24 and int(mins) < 60:
            half = h % 12 or 12
            ampm = "am" if h < 12 else "pm"
            out += [m.group(0), f"{h}:{mins}", f"{h:02d}:{mins}", f"{h:02d}.{mins}", f"{half}:{mins} {ampm}",
                    f"{half}:{mins}{ampm}"] + ([f"{half}{ampm}", f"{half} {ampm}"] if mins == "00" else [])
    return out


def _counted_forms(text: str, taken: list) -> list[str]:
    """A number with its unit, in digits or in words ("3 days" / three days)."""
    out = []
    for pattern, numeric in ((_DIGITS_UNIT, True), (_NUMBER_WORD, False)):
        for m in pattern.finditer(text):
            unit = m.group("unit")
            if _inside(m, taken) or unit.lower() in STOPWORDS or unit.lower() in _MONTH_NO:
                continue
            n = m.group("n")
            if numeric and len(n) >= 4:                # a year: forbidden on its own already
                continue
            value = int(n) if numeric else _word_value(n)
            out += _unit_forms(str(value), unit, value) + ([f"{n}{m.group('sep')}{unit}"] if not numeric else [])
    return out


def _inside(m, taken: list) -> bool:
    return any(a <= m.start() < b for a, b in taken)


def quantities(text: str) -> list[str]:
    """Numbers, dates and quantities as the units they are, in every surface form a model writes:
    "11,000" (also 11000, 11 000), "1.75 million" (also 1,750,000 and 1750000), "7.4" (7,4), "12%"
    (12 percent, 12 per cent), dates (see `dates`), times ("17:00", "5pm"), ranges ("2002-03",
    "10 to 12%"), money ("£45.50", "20p" / 20 pence) and a number with its unit ("3 days" / three
    days, "3,800m" / 3,800 metres). A one-digit number is forbidden only with its unit or sign
    ("5%", "3 days"), never alone."""
    taken = [m.span() for p in (_DAY_MONTH, _MONTH_DAY, _ISO_DATE, _SLASH_DATE, _CLOCK) for m in p.finditer(text)]
    out = dates(text) + _percent_forms(text) + _range_forms(text, taken) + _scaled_forms(text)
    out += _amount_forms(text, taken) + _clock_forms(text) + _counted_forms(text, taken)
    return list(dict.fromkeys(o for o in out if o.strip()))


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
    """Distinctive single words of a name ("Basil", "Mahfouz", "Al-Kuwaiti"); not titles ("President")."""
    return [w for w in name.split() if len(w) >= 3 and w.lower() not in STOPWORDS | _CONNECTORS | TITLES]


def stems(name: str, keep: int = 5) -> list[str]:
    """The first `keep` letters of each name word longer than `keep`: forbidding "Abilo" also stops
    near misses such as "Abilova" or "Abilove" that spell out the same identity."""
    return [p[:keep] for p in name_parts(name) if len(p) > keep and p[:keep].isalpha()]


NEAR_MISS_MIN = 5   # letters a run of a name needs before its one-edit spellings count as the name


def near_misses(part: str) -> list[str]:
    """Every spelling one edit from each run of NEAR_MISS_MIN+ letters of `part`, lower-cased (a letter
    dropped, added or changed, or two neighbours swapped): "bacil" and "basill" from "Basil", "kuwait"
    from "Al-Kuwaiti". A reader who knows the name reads it in each of them."""
    out: set[str] = set()
    for run in re.findall(r"[^\W\d_]+", part.lower()):
        if len(run) < NEAR_MISS_MIN:
            continue
        letters = sorted(set(run) | set(string.ascii_lowercase))
        for i in range(len(run) + 1):
            out.update(run[:i] + c + run[i:] for c in letters)
            if i < len(run):
                out.add(run[:i] + run[i + 1:])
                out.update(run[:i] + c + run[i + 1:] for c in letters)
            if i + 1 < len(run):
                out.add(run[:i] + run[i + 1] + run[i] + run[i + 2:])
        out.discard(run)
    return sorted(out)


def item_phrases(question: str | None, answer: str, with_key_words: bool = True) -> list[str]:
    """Every phrase a forget item's answer reveals, most specific first, without duplicates."""
    question = question or ""
    found = quoted(answer) + [n for n in names(answer) if n.lower() not in _CALENDAR | TITLES]
    found += [p for n in names(answer) if len(n.split()) >= 2 for p in name_parts(n) + stems(n)]
    found += quantities(answer) + numbers(answer)
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


def item_subjects(items) -> list[Optional[str]]:
    """The subject (a person, mostly) each QA item is about, None when it cannot be told: the item's own
    `person` where its source says, else the name asked about (group_targets) that the most items mention
    and this one names ("Nikolai Abilov" before "African American")."""
    texts = [f"{r.question or ''}\n{r.answer}".lower() for r in items]
    targets = sorted(group_targets([r.question or "" for r in items]),
                     key=lambda t: (-sum(t.lower() in x for x in texts), -len(t)))
    return [r.person or next((t for t in targets if t.lower() in x), None) for r, x in zip(items, texts)]


@lru_cache(maxsize=1 << 16)
def _whole_words(low_phrase: str) -> re.Pattern:
    # compiled once per phrase: `re`'s own cache holds 512 patterns, fewer than a policy's probes
    return re.compile(r"(?<![\w])" + re.escape(low_phrase) + r"(?![\w])")


def _contains(low_text: str, phrase: str) -> bool:
    return _whole_words(phrase.lower()).search(low_text) is not None


class Background:
    """Texts (e.g. the retain prompts) asked many times whether they mention a phrase: lower-cased
    once, and a phrase one of whose words occurs in none of them is answered without a scan (a
    match as whole words needs every word of the phrase), so thousands of names cost thousands of
    set look-ups, not names x texts regular-expression searches. The same answers as `mentions`."""

    def __init__(self, texts: list[str]):
        self.low = [t.lower() for t in texts]
        self.words = {w for t in self.low for w in word_tokens(t)}

    def __len__(self) -> int:
        return len(self.low)

    def mentions(self, phrase: str) -> bool:
        """Whether any text contains `phrase` as whole words (case-insensitive)."""
        if not all(w in self.words for w in word_tokens(phrase)):
            return False
        return any(_contains(t, phrase) for t in self.low)


def distinctive_parts(name: str, background: "list[str] | Background") -> list[str]:
    """Words of a name that never occur in the background texts (e.g. the retain prompts): a
    question naming only "Abilov" still names the target, one saying "American" does not."""
    bg = background if isinstance(background, Background) else Background(background)
    return [p for p in name_parts(name) if len(p) >= 4 and not bg.mentions(p)]


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



class MentionIndex:
    """Which of many probe lists a text mentions (`mentions`), without testing every list: the
    candidates come from a ProbeIndex (which finds a superset: it ignores the spacing between
    words), each confirmed with `mentions`. `find(text)` equals
    `[k for k, probes in enumerate(lists) if mentions(text, probes)]`."""

    def __init__(self, probe_lists: list[list[str]]):
        self.lists = probe_lists
        self.index = ProbeIndex((p, k) for k, probes in enumerate(probe_lists) for p in probes)

    def find(self, text: str) -> list[int]:
        return [k for k in sorted(self.index.find(text)) if mentions(text, self.lists[k])]
