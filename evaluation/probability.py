"""Answer probability as TOFU defines it: training/probability.py (the training callback needs it,
and training/ sits below evaluation/), re-exported for the measuring side."""

from __future__ import annotations

from ..training.probability import answer_probabilities, mean

__all__ = ["answer_probabilities", "mean"]
