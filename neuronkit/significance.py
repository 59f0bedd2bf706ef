"""Intervals and paired tests for the report's rates: pure Python, so report and data jobs need no model stack."""

from __future__ import annotations

import math
from typing import Sequence

ALPHA = 0.05  # a paired difference is called significant only below this p-value


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion k/n, in percent."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (round(100 * max(0.0, centre - half), 2), round(100 * min(1.0, centre + half), 2))


def mcnemar_exact(flags_x: Sequence[bool], flags_y: Sequence[bool]) -> dict:
    """Exact two-sided McNemar test on paired binary outcomes (the same prompts under two conditions)."""
    if len(flags_x) != len(flags_y):
        raise ValueError(f"paired test needs equal lengths, got {len(flags_x)} and {len(flags_y)}")
    only_x = sum(1 for a, b in zip(flags_x, flags_y) if a and not b)
    only_y = sum(1 for a, b in zip(flags_x, flags_y) if b and not a)
    n = only_x + only_y
    tail = sum(math.comb(n, i) for i in range(min(only_x, only_y) + 1)) / 2 ** n if n else 1.0
    p_value = round(min(1.0, 2 * tail), 6)
    return {"test": "mcnemar_exact", "only_first": only_x, "only_second": only_y, "p_value": p_value,
            "significant": p_value < ALPHA}
