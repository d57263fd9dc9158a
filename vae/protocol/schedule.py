"""Where a run logs on the "training samples evaluated" axis: evaluations at log-spaced points (Fig. 2) or evenly
spaced ones (Fig. 3), and the running average of the minibatch bounds at evenly spaced points (Fig. 2's train
curve). A run logs at most ``MAX_POINTS`` of each, so what is built before training stays small whatever the
budget."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from vae.config import ConfigError

if TYPE_CHECKING:
    from vae.config import Config

MAX_POINTS = 100_000  # evaluations, and running averages, per run (the paper's runs: about 30 and 400)


def round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def end_of(cfg: Config, step: int) -> int:
    """Where a run whose iterations evaluate ``step`` samples each ends: its budget rounded up to a whole
    iteration."""
    return round_up(cfg.budget, step)


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


def bounded(count: int, kind: str, cfg: Config, advice: str) -> None:
    """Refuse ``count`` points of ``kind`` beyond ``MAX_POINTS``, before any is built."""
    if count > MAX_POINTS:
        raise ConfigError(
            f"budget={cfg.budget:,d} makes up to {count:,d} {kind} points; a run logs at most "
            f"{MAX_POINTS:,d}: lower the budget or {advice}"
        )


def run_points(cfg: Config, step: int) -> list[int]:
    """The evaluation points of a run whose optimizer iterations evaluate ``step`` samples each."""
    last = end_of(cfg, step)
    if cfg.eval_spacing == "log":  # the loop of eval_points stops once start * 10^(k/per_decade) > last + step / 2
        tries = math.floor(cfg.eval_per_decade * math.log10((last + step) / cfg.eval_start)) + 2
        bounded(tries, "evaluation", cfg, f"lower eval_per_decade={cfg.eval_per_decade:,d}")
        return eval_points(cfg.eval_start, last, cfg.eval_per_decade, step)
    bounded((last - cfg.eval_start) // cfg.eval_every + 2, "evaluation", cfg, f"raise eval_every={cfg.eval_every:,d}")
    return linear_points(cfg.eval_start, cfg.eval_every, last, step)


def running_points(cfg: Config, step: int) -> list[int]:
    """Where the running average of the minibatch bounds is logged: every ``running_every`` samples and at the
    budget, rounded to whole steps; none where ``running_every`` is null."""
    if cfg.running_every is None:
        return []
    last = end_of(cfg, step)
    bounded(
        last // cfg.running_every + 1,
        "running-average",
        cfg,
        f"raise running_every={cfg.running_every:,d} (null logs none)",
    )
    return linear_points(cfg.running_every, cfg.running_every, last, step)


def check_schedule(cfg: Config, step: int) -> None:
    """Refuse a run that would log more than ``MAX_POINTS`` evaluations or running averages."""
    run_points(cfg, step)
    running_points(cfg, step)
