"""Where the bound is evaluated: log-spaced points on the "training samples evaluated" axis (Fig. 2)."""

from __future__ import annotations


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def eval_points(start: int, budget: int, per_decade: int, M: int) -> list[int]:
    """Points start * 10^(k/per_decade), k = 0, 1, ..., rounded to whole minibatches, up to the budget,
    plus the budget itself (rounded up to a whole minibatch). Every point is a multiple of M, so the same
    points are reached whatever the budget, and extending a budget only adds points."""
    last = round_up(budget, M)
    points = set()
    k = 0
    while True:
        p = max(M, round(start * 10 ** (k / per_decade) / M) * M)
        if p > last:
            break
        points.add(p)
        k += 1
    points.add(last)
    return sorted(points)
