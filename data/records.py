"""The one record type every data source yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class QA:
    """A question/answer pair in TOFU's format. `question=None` marks raw text
    (verbatim unlearning): the loss then covers every token of `answer`."""

    question: Optional[str]
    answer: str
    extra: dict = field(default_factory=dict)  # paraphrased_question, perturbed_answer, ...

    @classmethod
    def from_json(cls, obj: dict, where: str) -> "QA":
        if not isinstance(obj, dict) or "question" not in obj or "answer" not in obj:
            raise ValueError(f"{where}: expected an object with 'question' and 'answer' keys")
        if not isinstance(obj["answer"], str) or not isinstance(obj["question"], str):
            raise ValueError(f"{where}: 'question' and 'answer' must be strings")
        extra = {k: v for k, v in obj.items() if k not in ("question", "answer")}
        return cls(obj["question"], obj["answer"], extra)

    def to_json(self) -> dict:
        return {"question": self.question, "answer": self.answer, **self.extra}

    # the fields of `extra` the toolkit reads, typed (a field of another type reads as absent); `extra`
    # keeps every field of the source as it was, so a record is written back unchanged
    def _text(self, key: str) -> Optional[str]:
        value = self.extra.get(key)
        return value if isinstance(value, str) else None

    @property
    def paraphrased_question(self) -> Optional[str]:
        return self._text("paraphrased_question")

    @property
    def paraphrased_answer(self) -> Optional[str]:
        return self._text("paraphrased_answer")

    @property
    def perturbed_answers(self) -> list[str]:
        """TOFU's perturbed (false) answers; [] where there are none."""
        value = self.extra.get("perturbed_answer")
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    @property
    def person(self) -> Optional[str]:
        """Whom the item is about, where the source says (the synthetic generator and TOFU-mini do)."""
        return self._text("person")
