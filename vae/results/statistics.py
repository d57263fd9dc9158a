"""Statistics over the seeds of a curve: the mean, its standard deviation and 95% Student-t interval."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from scipy.stats import t as student_t

from vae.results.runs import LoggedRun, logged


def t_half_width(std: Any, n: int) -> Any:
    """Half the width of the 95% Student-t interval of a mean over ``n`` seeds: t(0.975, n-1)·std/√n (NaN for
    one seed)."""
    return float(student_t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else std * math.nan


def curve_mean(members: list[LoggedRun], column: str) -> pd.DataFrame:
    """At every point that a seed logged ``column`` at, over the seeds that did (seeds may reach different
    budgets, and some logged no running average): the mean (``value``), the sample standard deviation (``std``),
    the number of seeds and the 95% Student-t interval of the mean (``ci_low``, ``ci_high``: mean ±
    t(0.975, n-1)·std/√n; NaN for one seed)."""
    frames = [m.metrics.set_index("samples")[column].dropna() for m in logged(members, column)]
    joined = pd.concat(frames, axis=1, join="outer").sort_index()
    n = joined.count(axis=1)
    mean, std = joined.mean(axis=1), joined.std(axis=1, ddof=1)
    half = pd.Series([t_half_width(s, int(k)) for s, k in zip(std, n, strict=True)], index=joined.index)
    return pd.DataFrame(
        {"value": mean, "std": std, "seeds": n, "ci_low": mean - half, "ci_high": mean + half}
    ).reset_index()
