"""Where a run logs on the "training samples evaluated" axis: evaluations at log-spaced points (Fig. 2) or evenly
spaced ones (Fig. 3), and the running average of the minibatch bounds at evenly spaced points (Fig. 2's train
curve)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vae.config import Config


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


def linear_points(start: int, every: int, budget: int, step: int) -> list[int]:
    """Points start + k * every, rounded to whole steps of ``step`` samples, up to the budget, plus the
    budget itself (rounded up to a whole step)."""
    last = round_up(budget, step)
    points = {max(step, round((start + k * every) / step) * step) for k in range(max(0, (last - start) // every) + 1)}
    return sorted(p for p in points | {last} if p <= last)


def run_points(cfg: Config, step: int) -> list[int]:
    """The evaluation points of a run whose optimizer iterations evaluate ``step`` samples each."""
    if cfg.eval_spacing == "log":
        return eval_points(cfg.eval_start, cfg.samples, cfg.eval_per_decade, step)
    return linear_points(cfg.eval_start, cfg.eval_every, cfg.samples, step)


def running_points(cfg: Config, step: int) -> list[int]:
    """Where the running average of the minibatch bounds is logged: every ``running_every`` samples and at the
    budget, rounded to whole steps; none where ``running_every`` is null."""
    if cfg.running_every is None:
        return []
    return linear_points(cfg.running_every, cfg.running_every, cfg.samples, step)
