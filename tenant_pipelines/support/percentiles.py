"""Percentiles of a handful of measurements, as the console's platform page reports them.

Nearest-rank, not interpolated: the p-th percentile of n sorted values is the value at rank
ceil(p/100 * n) (1-based). Every answer is a duration that really happened, which is what an
operator wants to look up in the registry; with the few activations an hour brings, an
interpolated value would be a time no tenant took.
"""

import math
from collections.abc import Iterable


def nearest_rank(values: Iterable[float], percent: float) -> float:
    """The `percent`-th percentile (0 < percent <= 100) of `values` by nearest rank.
    Raises ValueError for no values or a percent out of range: there is no answer to make up."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values: a percentile of nothing is undefined")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], not {percent}")
    rank = math.ceil(percent * len(ordered) / 100)  # multiply first: 95 * 20 / 100 is 19 exactly
    return ordered[rank - 1]
