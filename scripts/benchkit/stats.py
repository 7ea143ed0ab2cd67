"""Percentiles and summaries of the samples (no third-party statistics needed)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def pct(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100), linear between the two nearest samples."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Iterable[float]) -> dict[str, Any]:
    """n, median, p90, p99, min and max of ``values``."""
    v = list(values)
    return {
        "n": len(v),
        "median": pct(v, 50),
        "p90": pct(v, 90),
        "p99": pct(v, 99),
        "min": min(v) if v else float("nan"),
        "max": max(v) if v else float("nan"),
    }


def medians(samples: list[dict[str, Any]], keys: Iterable[str]) -> dict[str, float]:
    """The median of each numeric ``key`` over ``samples`` (missing values skipped)."""
    out = {}
    for key in keys:
        values = [s[key] for s in samples if isinstance(s.get(key), int | float)]
        out[key] = pct(values, 50)
    return out
