"""Numbers shared by every layer: the one mean over the values that are numbers.

    finite_mean(v) = sum(x for x in v if x is finite) / #(such x),   None when there are none

A None is a metric an item lacks (no paraphrased question, no answer tokens); a NaN is one that could
not be computed (an empty answer's probability). Evaluation's aggregates, attack rates and the
quantization attack's mean answer probability (evaluation/metrics/means.py) and the training
callback's answer probability (training/probability.py) all average this way."""

from __future__ import annotations

import math
from typing import Iterable, Optional


def finite_mean(values: Iterable) -> Optional[float]:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None
