"""Intervals and paired tests for the report's rates, from scipy.stats: report and data jobs need no model stack."""

from __future__ import annotations

from typing import Sequence

from scipy.stats import binomtest

ALPHA = 0.05  # a paired difference is called significant only below this p-value
CONFIDENCE = 0.95


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval for a proportion k/n, in percent (scipy's ``proportion_ci(method="wilson")``)."""
    if n == 0:
        return (float("nan"), float("nan"))
    ci = binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return (round(100 * float(ci.low), 2), round(100 * float(ci.high), 2))


def rate_metric(flags: Sequence[bool], *, metric: str, dataset: str, variant: str, judge: str) -> dict:
    """One reported figure: a percentage with everything needed to read it (k of n and its Wilson interval)."""
    n, k = len(flags), int(sum(bool(f) for f in flags))
    return {
        "variant": variant, "dataset": dataset, "metric": metric, "value": round(100 * k / n, 2) if n else None,
        "unit": "%", "k": k, "n": n, "judge": judge, "ci95": list(wilson_interval(k, n)),
    }


def mcnemar_exact(flags_x: Sequence[bool], flags_y: Sequence[bool]) -> dict:
    """Exact two-sided McNemar test on paired binary outcomes (the same prompts under two conditions): a binomial
    test of the discordant pairs against p = 1/2."""
    if len(flags_x) != len(flags_y):
        raise ValueError(f"paired test needs equal lengths, got {len(flags_x)} and {len(flags_y)}")
    only_x = sum(1 for a, b in zip(flags_x, flags_y) if a and not b)
    only_y = sum(1 for a, b in zip(flags_x, flags_y) if b and not a)
    return mcnemar_from_discordant(only_x, only_y)


def mcnemar_from_discordant(only_x: int, only_y: int) -> dict:
    """The exact McNemar test from its discordant counts alone: several sets' tests pool by adding them."""
    n = only_x + only_y
    p_value = round(float(binomtest(only_x, n, 0.5).pvalue), 6) if n else 1.0
    return {"test": "mcnemar_exact", "only_first": only_x, "only_second": only_y, "p_value": p_value,
            "significant": p_value < ALPHA}
