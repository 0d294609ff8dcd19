"""The one mean of the measuring side: over the values that are numbers (None and NaN skipped).

    finite_mean(v) = sum(x for x in v if x is finite) / #(such x),   None when there are none

A None is a metric an item lacks (no paraphrased question, no answer tokens); a NaN is one that could
not be computed (an empty answer's probability). Aggregates, attack rates and the quantization
attack's mean answer probability all average this way. Defined in the lowest layer (stats.py), so the
training callback's mean (training/probability.py) is this one too."""

from __future__ import annotations

from ...stats import finite_mean

__all__ = ["finite_mean"]
