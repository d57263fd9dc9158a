import math

from vae.protocol.schedule import eval_points


def test_points_are_whole_minibatches_ten_per_decade_and_end_at_the_budget():
    pts = eval_points(100_000, 100_000_000, 10, 100)
    assert pts[0] == 100_000 and pts[-1] == 100_000_000
    assert all(p % 100 == 0 for p in pts) and pts == sorted(set(pts))
    assert len(pts) == 31
    steps = [math.log10(b / a) for a, b in zip(pts, pts[1:])]
    assert all(abs(s - 0.1) < 1e-3 for s in steps)


def test_extending_the_budget_only_adds_points():
    short = eval_points(100_000, 3_000_000, 10, 100)
    long = eval_points(100_000, 100_000_000, 10, 100)
    assert set(short) - set(long) == {3_000_000}
    assert [p for p in long if p < 3_000_000] == short[:-1]


def test_budget_is_rounded_up_to_a_whole_minibatch():
    assert eval_points(1000, 1234, 10, 100)[-1] == 1300
