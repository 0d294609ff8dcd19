"""Canonical views of a prompt: what the classifier tests, so that a disguised request reads as
the plain one. Pure string functions (no model, no tokenizer); each undoes one family of disguise:

* `fold(text)`       NFKC (full-width and mathematical letters, ligatures), invisible characters
                     dropped (Unicode category Cf: zero-width spaces and joiners, soft hyphen, word
                     joiner, BOM, bidi overrides), diacritics stripped ("Básil" -> "Basil"), letters
                     that carry a stroke rather than a mark read as their base ("Kało" -> "Kalo") and
                     Cyrillic/Greek look-alikes mapped to Latin letters ("Ваѕіl" -> "Basil");
* `deleet(text)`     leetspeak read back in the words that use it ("B4s1l M4hf0uz" -> "Basil
                     Mahfouz"); "1" is "i" or "l", so callers try both;
* `unspace(text)`    runs of single letters put back together ("B a s i l", "B.a.s.i.l");
* `collapsed(text)`  letters and digits only, lower case: a name spelled with any separators
                     (or none) is a substring of it;
* `backwards(text)`  the text reversed ("zuofhaM lisaB" -> "Basil Mahfouz"); `unreverse` turns
                     round only the words that read as capitalised words written backwards;
* `strip_markers`, `messages`: chat-template markers (`<|im_start|>`, `[INST]`, ...) removed, and
                     a decoded chat prompt cut into its messages (every role), tokenizer-free;
* `windows(text)`    a long text cut into short overlapping sentence windows, so a question
                     hidden after a page of filler gets an embedding of its own (the sentence
                     embedder reads only its first 256 tokens).
"""

from __future__ import annotations

import re
import unicodedata

# Letters of other scripts that render like Latin ones (the common confusables).
HOMOGLYPHS = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h", "ԁ": "d", "ԛ": "q",
    "ԝ": "w", "ӏ": "l", "ү": "y", "ɡ": "g", "ь": "b", "п": "n", "г": "r",
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ї": "I", "Ј": "J", "Һ": "H", "Ԁ": "D", "Ԛ": "Q",
    "Ԝ": "W", "Ӏ": "I", "Ү": "Y",
    # Greek
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C", "Ϳ": "J",
    "α": "a", "β": "v", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j",
    # Armenian, Latin IPA and others
    "օ": "o", "ս": "u", "հ": "h", "ո": "n", "ց": "g", "ɑ": "a", "ı": "i", "ȷ": "j", "ɩ": "i",
    "ʟ": "L", "ɪ": "I", "ᴀ": "A", "ʙ": "B", "ᴄ": "C", "ᴅ": "D", "ᴇ": "E", "ɢ": "G", "ʜ": "H",
    "ᴊ": "J", "ᴋ": "K", "ᴍ": "M", "ɴ": "N", "ᴏ": "O", "ᴘ": "P", "ʀ": "R", "ꜱ": "S", "ᴛ": "T",
    "ᴜ": "U", "ᴠ": "V", "ᴡ": "W", "ʏ": "Y", "ᴢ": "Z",
}
# Latin letters that Unicode does not decompose into a base letter and a mark (so NFKD leaves them whole)
UNDECOMPOSED = {"ł": "l", "Ł": "L", "ŧ": "t", "Ŧ": "T", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D", "ħ": "h",
                "Ħ": "H", "ð": "d", "Ð": "D", "ƀ": "b", "ɨ": "i", "ƚ": "l", "ß": "ss", "æ": "ae", "Æ": "AE",
                "œ": "oe", "Œ": "OE", "þ": "th", "Þ": "Th"}
_HOMOGLYPHS = str.maketrans({**HOMOGLYPHS, **UNDECOMPOSED})
_DROP = frozenset(("Cf", "Mn", "Me"))   # invisible format characters, combining marks

LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}   # and 1 -> i or l
_LEET_CHARS = "013457@$"
_LEET_WORD = re.compile(r"[A-Za-z0-9@$]+")
# a leet character between two letters ("B4s1l"), leading ones before letters only ("4l"), or
# trailing ones after lower-case letters ("th3"; "MP3", "Win10" are names)
_LEET_INSIDE = re.compile(r"[A-Za-z][013457@$]+[A-Za-z]")
_LEET_EDGE = re.compile(r"[013457@$]+[A-Za-z]+|[a-z]{2,}[013457@$]+")
# a number with a unit or ordinal suffix is not leetspeak ("1960s", "4th", "10am", "3D", "5G")
_NUMBER_SUFFIX = re.compile(r"\d+(?:st|nd|rd|th|s|am|pm|k|m|bn|mn|km|kg|cm|mm|ml|g|mb|gb|tb|p|x|d|ft|hz|mph|kw|v)",
                            re.IGNORECASE)


def fold(text: str) -> str:
    """NFKC, without invisible characters or diacritics, look-alike letters mapped to Latin.
    ASCII text is returned unchanged (the fast path of every ordinary prompt)."""
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    text = "".join(c for c in text if unicodedata.category(c) not in _DROP)
    return unicodedata.normalize("NFC", text.translate(_HOMOGLYPHS))


def _is_leet(word: str) -> bool:
    if _NUMBER_SUFFIX.fullmatch(word):
        return False
    return bool(_LEET_INSIDE.search(word) or _LEET_EDGE.fullmatch(word))


def deleet(text: str, one: str = "i", everywhere: bool = False) -> str:
    """Leetspeak read back: 0->o 3->e 4->a 5->s 7->t @->a $->s, and 1->`one` ("i" or "l"). Only
    in words that use it (a leet character between letters, leading ones before letters, trailing
    ones after lower-case letters), so "1960s", "4th", "MP3" and plain numbers stay; `everywhere`
    maps every such character."""
    table = str.maketrans({**LEET, "1": one})
    if everywhere:
        return text.translate(table)
    return _LEET_WORD.sub(lambda m: m.group(0).translate(table) if _is_leet(m.group(0)) else m.group(0), text)


# three or more single letters or digits, separated by one and the same separator (space, dot, ...)
_SPACED = re.compile(r"(?<![^\W_])[^\W_](?P<sep>[ .\-_*·•/|,+~])(?:[^\W_](?P=sep))+[^\W_](?![^\W_])")


def unspace(text: str) -> str:
    """Runs of single characters joined ("B a s i l" -> "Basil", "B.a.s.i.l" -> "Basil"); a
    double space or another separator between runs still separates words ("B.a.s M.a.h")."""
    return _SPACED.sub(lambda m: "".join(m.group(0)[::2]), text)


_NON_ALNUM = re.compile(r"[\W_]+")


def collapsed(text: str) -> str:
    """Letters and digits only, lower case: "B-a-s-i-l  M.a.h" -> "basilmah"."""
    return _NON_ALNUM.sub("", text.lower())


def backwards(text: str) -> str:
    """The text reversed, character by character."""
    return text[::-1]


# a capitalised word written backwards starts in lower case and ends in a capital ("lisaB", "ziawuK-lA")
_REVERSED_RUN = re.compile(r"(?<![\w'’-])[a-z][\w'’-]*[A-Z](?:\s+[a-z][\w'’-]*[A-Z])*(?![\w'’-])")


def unreverse(text: str) -> str:
    """Runs of words that read as capitalised words written backwards put the right way round
    ("Who is zuofhaM lisaB?" -> "Who is Basil Mahfouz?"); other text unchanged."""
    return _REVERSED_RUN.sub(lambda m: m.group(0)[::-1], text)


# special-token strings and turn markers of the common chat templates (ChatML, Llama 3, Llama 2 /
# Mistral, Gemma, Phi, DeepSeek's full-width bars)
MARKERS = re.compile(r"<[|｜][^<>\n]{0,40}?[|｜]>|</?s>|<(?:start_of_turn|end_of_turn|bos|eos|pad|unk)>"
                     r"|\[/?INST\]|<</?SYS>>|\[/?(?:SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_RESULTS|TOOL_CALLS)\]")
_ROLES = r"(?:system|user|assistant|tool|ipython|model|developer|function|human|bot)"
_ROLE = re.compile(r"\A\s*(?:#+\s*)?" + _ROLES + r"[ \t]*(?::[ \t]*|\n|\Z)", re.IGNORECASE)   # a message's header
_MARKER_AND_ROLE = re.compile(r"(?:" + MARKERS.pattern + r")(?:[ \t]*" + _ROLES + r"\b[ \t]*\n?)?", re.IGNORECASE)


def strip_markers(text: str, replacement: str = "\n") -> str:
    """`text` with every chat-template marker (and the role name right after one) replaced."""
    return _MARKER_AND_ROLE.sub(replacement, text)


def messages(text: str) -> list[str]:
    """The messages of a decoded chat prompt, every role, in order, without the template's markers
    and role headers (the whole text when it has no markers). Empty messages are left out."""
    out = []
    for part in MARKERS.split(text):
        part = _ROLE.sub("", part, count=1).strip()
        if part:
            out.append(part)
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"'”’)\]]*\s+|\n+")


def sentences(text: str) -> list[str]:
    """Sentences (and lines) of `text`, stripped, empty ones left out."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def windows(text: str, max_words: int = 40, min_words: int = 6) -> list[str]:
    """Short windows that together cover `text`: one per sentence, a short sentence joined with the
    next ones until `min_words` (so windows overlap), a sentence over `max_words` cut into chunks
    that overlap by half; and the tail (the last sentences, up to `max_words`), where a question
    hidden after filler usually sits. A text of at most `max_words` words is one window."""
    words = text.split()
    if len(words) <= max_words:
        return [text.strip()] if words else []
    sents = [s.split() for s in sentences(text)]
    out: list[str] = []
    for i, sent in enumerate(sents):
        if len(sent) > max_words:
            step = max(1, max_words // 2)
            out += [" ".join(sent[j:j + max_words]) for j in range(0, len(sent) - step, step)]
            continue
        window, j = list(sent), i + 1
        while len(window) < min_words and j < len(sents) and len(window) + len(sents[j]) <= max_words:
            window += sents[j]
            j += 1
        out.append(" ".join(window))
    tail: list[str] = []
    for sent in reversed(sents):
        if len(tail) + len(sent) > max_words:
            break
        tail = sent + tail
    out.append(" ".join(tail or words[-max(1, max_words // 2):]))
    return list(dict.fromkeys(w for w in out if w))


# Cyrillic and Greek letters read as Latin (a name written in another alphabet: "Басил" -> "basil");
# applied before folding (which maps the letters that merely look Latin to those, "с" to "c")
TRANSLITERATION = str.maketrans({
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z", "и": "i",
    "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
    "у": "u", "ф": "f", "х": "h", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "sh", "ъ": "", "ы": "y", "ь": "",
    "э": "e", "ю": "yu", "я": "ya", "і": "i", "ї": "i", "є": "e", "ў": "u",
    "α": "a", "β": "v", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "i", "θ": "th", "ι": "i", "κ": "k",
    "λ": "l", "μ": "m", "ν": "n", "ξ": "x", "ο": "o", "π": "p", "ρ": "r", "σ": "s", "ς": "s", "τ": "t",
    "υ": "u", "φ": "f", "χ": "ch", "ψ": "ps", "ω": "o"})
_OTHER_ALPHABET = re.compile(r"[\u0370-\u03ff\u0400-\u04ff]")


def transliterated(text: str) -> str:
    """`text` lower-cased with its Cyrillic and Greek letters written in Latin ones (unchanged when it
    has none)."""
    return text.lower().translate(TRANSLITERATION) if _OTHER_ALPHABET.search(text) else text


def lexical_views(text: str) -> list[str]:
    """The distinct texts the name test reads: `text` with its template markers removed and folded,
    then de-leeted (1 read as i and as l) with spaced-out letters joined, and backwards; a text with
    Cyrillic or Greek letters is also read transliterated."""
    stripped = strip_markers(text)
    plain = fold(stripped)
    views = [plain, fold(transliterated(stripped))]   # before folding, which reads "с" as a Latin "c"
    for one in ("i", "l"):
        views.append(unspace(deleet(plain, one)))
    views.append(backwards(unspace(plain)))
    return list(dict.fromkeys(views))


def collapsed_views(text: str) -> list[str]:
    """The distinct collapsed texts the spelled-out-name test searches: the folded text with its
    markers removed (so a marker cannot split a name), and with every leet character read back."""
    plain = fold(strip_markers(text, ""))
    views = [collapsed(plain)] + [collapsed(deleet(plain, one, everywhere=True)) for one in ("i", "l")]
    return list(dict.fromkeys(views))


def semantic_views(text: str) -> list[str]:
    """What the sentence embedder should read for a message, without repeats: the folded text,
    then with leetspeak read back (1 as i, then as l), spaced-out letters joined and names written
    backwards turned round. An ordinary message gives one view."""
    plain = fold(text)
    return list(dict.fromkeys([plain] + [unreverse(unspace(deleet(plain, one))) for one in ("i", "l")]))
