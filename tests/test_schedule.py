import math
import time
from itertools import pairwise

import pytest

from vae.config import ConfigError, make_config
from vae.protocol.schedule import MAX_POINTS, check_schedule, eval_points, run_points, running_points


def test_points_are_whole_minibatches_ten_per_decade_and_end_at_the_budget():
    pts = eval_points(100_000, 100_000_000, 10, 100)
    assert pts[0] == 100_000 and pts[-1] == 100_000_000
    assert all(p % 100 == 0 for p in pts) and pts == sorted(set(pts))
    assert len(pts) == 31
    steps = [math.log10(b / a) for a, b in pairwise(pts)]
    assert all(abs(s - 0.1) < 1e-3 for s in steps)


def test_extending_the_budget_only_adds_points():
    short = eval_points(100_000, 3_000_000, 10, 100)
    long = eval_points(100_000, 100_000_000, 10, 100)
    assert set(short) - set(long) == {3_000_000}
    assert [p for p in long if p < 3_000_000] == short[:-1]


def test_budget_is_rounded_up_to_a_whole_minibatch():
    assert eval_points(1000, 1234, 10, 100)[-1] == 1300


def test_a_run_logs_at_most_max_points_of_each_kind_and_the_refusal_comes_before_any_is_built():
    step = 100
    under = make_config(dict(budget=(MAX_POINTS - 1) * 1000, running_every=1000))
    assert len(running_points(under, step)) == MAX_POINTS - 1
    check_schedule(under, step)
    with pytest.raises(
        ConfigError,
        match=r"makes up to 100,001 running-average points; a run logs at most 100,000: "
        r"lower the budget or raise running_every=1,000 \(null logs none\)",
    ):
        running_points(make_config(dict(budget=MAX_POINTS * 1000, running_every=1000)), step)
    huge = [
        dict(budget=10**12, running_every=1),
        dict(budget=10**12, eval_per_decade=10**9, running_every=None),
        dict(budget=10**12, eval_spacing="linear", eval_every=1, running_every=None),
    ]
    for values in huge:  # each would take hours and terabytes to build
        start = time.perf_counter()
        with pytest.raises(ConfigError, match="a run logs at most 100,000"):
            check_schedule(make_config(values), step)
        assert time.perf_counter() - start < 0.1, values


def test_the_log_spaced_count_bounds_the_points_eval_points_tries():
    """Ten decades at 9,999 points each are built; at 10,000 each they would exceed the bound."""
    cfg = dict(budget=10**12, eval_start=100, running_every=None)
    assert len(run_points(make_config(cfg | {"eval_per_decade": 9_999}), 100)) <= MAX_POINTS
    with pytest.raises(ConfigError, match="makes up to 100,002 evaluation points"):
        run_points(make_config(cfg | {"eval_per_decade": 10_000}), 100)
