"""Chat-template formatting with the loss masked to answer tokens."""

from __future__ import annotations

import warnings

from ..errors import DataError
from .records import QA

IGNORE_INDEX = -100


def prompt_text(tokenizer, question: str) -> str:
    """The chat-formatted prompt up to and including the assistant header."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


def end_of_turn(tokenizer) -> str:
    return tokenizer.eos_token or ""


def encode_qa(tokenizer, record: QA, max_length: int) -> dict:
    """input_ids / attention_mask / labels for one record; labels are -100 outside the answer.

    Chat records: the answer is followed by the end-of-turn token (part of the answer, so the
    model learns to stop). Raw-text records (question None): every token is an answer token."""
    if record.question is None:
        ids = tokenizer(record.answer, add_special_tokens=False)["input_ids"][:max_length]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}
    prompt = prompt_text(tokenizer, record.question)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(record.answer + end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def n_answer_tokens(example: dict) -> int:
    # the first label never receives a loss (nothing predicts it), so count from position 1
    return sum(1 for label in example["labels"][1:] if label != IGNORE_INDEX)


def encode_all(tokenizer, records: list[QA], max_length: int, name: str) -> list[dict]:
    """Encode a whole set; refuse an empty one, or one left with no answer tokens."""
    if not records:
        raise DataError(f"the {name} set is empty")
    encoded = [encode_qa(tokenizer, r, max_length) for r in records]
    kept = [e for e in encoded if n_answer_tokens(e) > 0]
    if not kept:
        raise DataError(
            f"the {name} set has no answer tokens left after truncation to max_length={max_length}; "
            "raise max_length or shorten the prompts"
        )
    if len(kept) < len(encoded):
        warnings.warn(f"{len(encoded) - len(kept)} of {len(encoded)} {name} examples have no answer "
                      f"tokens after truncation to {max_length} and are skipped")
    return kept


def pad_batch(examples: list[dict], pad_id: int) -> dict:
    """Right-pad a list of encoded examples into tensors."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    def pad(key, value):
        return torch.tensor([e[key] + [value] * (width - len(e[key])) for e in examples])
    return {"input_ids": pad("input_ids", pad_id), "attention_mask": pad("attention_mask", 0),
            "labels": pad("labels", IGNORE_INDEX)}
