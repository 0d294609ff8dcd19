"""A forget corpus: the text a policy stops quoting, read, checked and tokenised.

Specs: `text:FILE` (one document), `text:DIR` (every regular file under it, hidden ones skipped, in
path order), `muse/raw_forget` (MUSE's raw forget corpus, data/muse.py), `muse/mini/forget_text`
(MUSE-mini's forget slice: the raw corpus's passages the target was fine-tuned on and the weight-level
methods unlearn, each a document). A file that cannot be read, is not UTF-8 (the line of the first bad
byte is named), or holds no text is refused at build time.

Tokenising: documents in batches (one tokenizer call each), ids straight into one int32 array with
the documents' start offsets (a Python list of ten million ids would take ~300 MB; the array takes 40).
A document longer than PIECE_CHARS is tokenised in pieces cut at blank lines, each piece starting
with the previous piece's last paragraph, so an n-gram across a cut is still in one piece unless it
spans more than two paragraphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.records import QA
from .disguise import sentences
from .policy import PolicyError

PIECE_CHARS = 1 << 18       # a document is tokenised in pieces of about this many characters
BATCH_CHARS = 1 << 20       # characters per tokenizer call (its Python lists: ~100 bytes a token)
MUSE_RAW = "muse/raw_forget"
MUSE_MINI = "muse/mini/forget_text"
MUSE_SPECS = (MUSE_RAW, MUSE_MINI)
PASSAGE_KEY = "corpus_passage"   # a window's passage (its number), in its QA's extra
WINDOW_WORDS = 60                 # the knowledge guard's items: windows of about this many words (`windows`)
ITEMS_VERSION = 2                 # raised when the items a forget-mode policy makes of a corpus change


@dataclass(frozen=True)
class Document:
    path: str
    text: str


def is_corpus_spec(spec: str) -> bool:
    """Whether `--forget spec` names a corpus (text to stop quoting) rather than QA pairs."""
    return isinstance(spec, str) and (spec.startswith("text:") or spec in MUSE_SPECS)


def read_document(path: Path) -> Document:
    """One UTF-8 file; refused, naming it (and the line of a bad byte), when it is unreadable, not UTF-8
    or empty."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"corpus file {str(path)!r} cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PolicyError(f"corpus file {str(path)!r}, line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                          f"offset {exc.start}); convert it, e.g. `iconv -f latin1 -t utf-8`") from None
    if not text.strip():
        raise PolicyError(f"corpus file {str(path)!r} is empty: nothing to stop quoting")
    return Document(str(path), text)


def read_corpus(spec: str) -> list[Document]:
    """The documents of a corpus spec (see the module docstring)."""
    if spec in MUSE_SPECS:
        from ..data.muse import load_mini, muse_root, split_files

        raw = read_document(split_files(muse_root(), need_raw=True)["raw_forget"])   # refused here if bad
        if spec == MUSE_RAW:
            return [raw]
        return [Document(f"{raw.path} (MUSE-mini forget passage {i})", r.answer)
                for i, r in enumerate(load_mini().forget_text, 1)]
    if not spec.startswith("text:"):
        raise PolicyError(f"{spec!r} is not a corpus spec (text:FILE, text:DIR, {MUSE_RAW} or {MUSE_MINI})")
    path = Path(spec[5:])
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(path).parts))
        if not files:
            raise PolicyError(f"corpus directory {str(path)!r} holds no files")
        return [read_document(p) for p in files]
    if not path.exists():
        raise PolicyError(f"corpus file {str(path)!r} does not exist")
    return [read_document(path)]


def passages(spec: str, documents: list[Document]) -> list[QA]:
    """The corpus as forget items (raw text, QA(None, window)) for the knowledge guard of `forget` mode:
    the `windows` of the paragraphs of a text corpus, of MUSE's passages of its raw corpus, or of
    MUSE-mini's forget passages."""
    if spec == MUSE_MINI:
        texts = [doc.text for doc in documents]
    elif spec == MUSE_RAW:
        from ..data.muse import split_passages

        texts = [p for doc in documents for p in split_passages(doc.text)]
    else:
        texts = [p for doc in documents for p in doc.text.split("\n\n")]
    return [QA(None, w, {PASSAGE_KEY: n}) for n, text in enumerate(texts) for w in windows(text)]


def windows(passage: str, max_words: int = WINDOW_WORDS) -> list[str]:
    """The passage as windows of whole sentences of at most `max_words` words, each starting at the
    middle sentence of the one before, so that two neighbouring sentences share a window wherever they
    fit in one; a sentence over `max_words` words is cut into chunks that overlap by half first. A news
    passage jumps between topics: embedded whole, its vector is its main topic's, and a question about a
    fact told in passing finds other passages."""
    if len(passage.split()) <= max_words:
        return [passage.strip()] if passage.strip() else []
    step = max(1, max_words // 2)
    sents = [" ".join(words[j:j + max_words]) if len(words) > max_words else s
             for s, words in ((s, s.split()) for s in sentences(passage))
             for j in (range(0, len(words) - step, step) if len(words) > max_words else [0])]
    out, start = [], 0
    while True:
        end, size = start, 0
        while end < len(sents) and (end == start or size + len(sents[end].split()) <= max_words):
            size += len(sents[end].split())
            end += 1
        out.append("\n".join(sents[start:end]))
        if end == len(sents):
            return out
        start = max(start + 1, (start + end) // 2)


def pieces(text: str, limit: int = PIECE_CHARS) -> list[str]:
    """`text` cut at blank lines into pieces of about `limit` characters, each after the first starting
    with the previous one's last paragraph."""
    if len(text) <= limit:
        return [text]
    paragraphs = text.split("\n\n")
    out, current, size = [], [], 0
    for para in paragraphs:
        if current and size + len(para) > limit:
            out.append("\n\n".join(current))
            current, size = current[-1:], len(current[-1])
        current.append(para)
        size += len(para) + 2
    out.append("\n\n".join(current))
    return out


def tokenize(tokenizer, documents: list[Document]) -> tuple[np.ndarray, np.ndarray]:
    """(every document's ids concatenated as int32, each document's (piece's) start offset)."""
    texts = [piece for doc in documents for piece in pieces(doc.text)]
    chunks, starts, at = [], [], 0
    batch: list[str] = []
    size = 0
    for n, text in enumerate(texts):
        batch.append(text)
        size += len(text)
        if size >= BATCH_CHARS or n == len(texts) - 1:
            for ids in tokenizer(batch, add_special_tokens=False, return_attention_mask=False)["input_ids"]:
                starts.append(at)
                chunks.append(np.asarray(ids, dtype=np.int32))
                at += len(ids)
            batch, size = [], 0
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.int32)), np.asarray(starts, dtype=np.int64)
