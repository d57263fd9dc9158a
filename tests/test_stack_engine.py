"""The stack engine: a sweep's runs trained together equal the same runs trained one by one (each a stack of
one), through the step-size selection, the run folders, W&B and checkpoints that either engine continues."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from vae.config import RunSpec, load_sweep, make_config
from vae.data import RunData
from vae.runs.checkpoint import load_model
from vae.runs.engine import Engine, run_sweep, stack_groups
from vae.runs.folder import ResultsError, RunFolder
from vae.runs.wandb_history import durable_steps

# Three latent sizes, so the stack pads; n_train 1000 keeps the full-set evaluations cheap. The step size is
# selected from three candidates, per model. (Different seeds in one stack: tests/test_stack_equals_alone.py.)
SWEEP = {
    "name": "st",
    "base": dict(
        dataset="mnist",
        n_train=1000,
        hidden=40,
        lr_candidates=[0.003, 0.01, 0.04],
        lr_select_samples=2000,
        adagrad_warmup=5,
        budget=6000,
        eval_start=1000,
        eval_per_decade=3,
        eval_batch=4000,
        wandb="disabled",
    ),
    "grid": {"nz": [2, 5, 9]},
}
RUNS = ["nz2-seed0", "nz5-seed0", "nz9-seed0"]


@contextmanager
def float64() -> Iterator[None]:
    """Float64 parameters, so that rounding cannot hide a difference between the two engines: in float32,
    Adagrad's normalized steps amplify rounding in the weights of rarely lit pixels."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def train(results: Path, data_root: Path, engine: str, exact: bool = True, sweep: dict = SWEEP, **overrides) -> dict:
    """The sweep on ``engine``; ``exact``: in float64, data included (an injected datamodule)."""
    sweep_file = results.parent / f"{results.name}.yaml"
    sweep_file.write_text(yaml.safe_dump(sweep))
    loaded = load_sweep(sweep_file, overrides)
    if not exact:
        return run_sweep(loaded, results, data_root, engine=Engine(engine))
    with float64():
        data = RunData(loaded.runs[0].config, data_root, torch.float64)
        return run_sweep(loaded, results, data_root, engine=Engine(engine), data=data)


def metrics(results: Path, run: str, sweep: str = "st") -> pd.DataFrame:
    return RunFolder.of(results, sweep, run).metrics()


def weights(results: Path, run: str, sweep: str = "st") -> dict[str, torch.Tensor]:
    return load_model(RunFolder.of(results, sweep, run)).state_dict()


def assert_same_runs(a: Path, b: Path, runs: list[str] = RUNS, sweep: str = "st") -> None:
    """Run folder b holds the runs of a (and possibly more evaluation points): same values, same weights."""
    for run in runs:
        ma, mb = metrics(a, run, sweep), metrics(b, run, sweep)
        mb = mb[mb["samples"].isin(ma["samples"])]
        assert list(ma["samples"]) == list(mb["samples"]), run
        for col in ("train/elbo", "test/elbo", "lr"):
            assert ma[col].to_numpy() == pytest.approx(mb[col].to_numpy(), rel=1e-10), (run, col)
        wa, wb = weights(a, run, sweep), weights(b, run, sweep)
        assert wa.keys() == wb.keys()
        for name in wa:
            torch.testing.assert_close(wa[name], wb[name], rtol=1e-8, atol=1e-10)


@pytest.fixture(scope="module")
def local(tmp_path_factory, data_root) -> tuple[Path, dict]:
    results = tmp_path_factory.mktemp("local") / "results"
    return results, train(results, data_root, "local")


def test_stacked_sweep_equals_the_runs_trained_one_by_one(local, tmp_path, data_root):
    """Same step-size picks per model, same evaluation points and values, same final weights."""
    local_results, local_status = local
    results = tmp_path / "stack"
    status = train(results, data_root, "stack")
    picks = {run: status[run]["lr"] for run in RUNS}
    assert picks == {run: local_status[run]["lr"] for run in RUNS}
    for run in RUNS:
        assert status[run]["lr_selection"] == pytest.approx(local_status[run]["lr_selection"], rel=1e-10)
        assert status[run]["stacked_with"] == RUNS
        assert RunFolder.of(results, "st", run).config_file.is_file()
    assert_same_runs(local_results, results)


def test_wake_sleep_runs_stack_too(tmp_path, data_root, capsys):
    """Wake-sleep (two optimizers per stack) through the stack engine equals its runs trained one by one. On a
    CPU the stack engine says that it is no faster there."""
    sweep = dict(SWEEP, name="ws", base=dict(SWEEP["base"], algorithm="wakesleep", budget=3000))
    train(tmp_path / "one", data_root, "local", sweep=sweep)
    assert "on a CPU" not in capsys.readouterr().out
    status = train(tmp_path / "stack", data_root, "stack", sweep=sweep)
    assert "note: --engine stack on a CPU" in capsys.readouterr().out
    assert all(status[run]["stacked_with"] == RUNS for run in RUNS)
    assert_same_runs(tmp_path / "one", tmp_path / "stack", sweep="ws")


def test_a_run_moves_between_the_stack_and_the_normal_path_through_its_checkpoint(local, tmp_path, data_root):
    """Half the budget on one path, the rest on the other, in both orders: the same runs as one path alone.
    This checks that the stack writes and reads the normal path's checkpoint (weights, Adagrad state, step
    size, random stream, history)."""
    local_results, _ = local
    for first, second in (("stack", "local"), ("local", "stack")):
        results = tmp_path / f"{first}-{second}"
        train(results, data_root, first, budget=3000)
        assert metrics(results, RUNS[0])["samples"].iloc[-1] == 3000
        train(results, data_root, second)
        assert_same_runs(local_results, results)


def test_each_model_of_a_stack_has_its_own_wandb_run(tmp_path, data_root):
    results = tmp_path / "wb"
    train(results, data_root, "stack", exact=False, budget=2000, wandb="offline")
    ids = set()
    for run in RUNS:
        folder = RunFolder.of(results, "st", run)
        (offline,) = (folder.path / "wandb").glob("offline-run-*")
        ids.add(offline.name.rsplit("-", 1)[-1])
        assert offline.name.endswith(folder.wandb_id())
        assert durable_steps(folder.path / "wandb", folder.wandb_id()) == folder.metrics()["samples"].tolist()
    assert len(ids) == len(RUNS)


def test_stacks_group_runs_that_can_share_one(tmp_path):
    def spec(name: str, **config) -> RunSpec:
        return RunSpec(name, make_config({"budget": 10**6, **config}))

    specs = [
        spec("a", nz=3),
        spec("b", nz=20, seed=4),
        spec("ws", algorithm="wakesleep"),
        spec("h", hidden=7),
        spec("c", nz=5),
        spec("ddp", devices=2),
        spec("ws2", algorithm="wakesleep", nz=3),
        spec("mcem", algorithm="mcem", evaluation="marginal"),
    ]
    stacks, rest = stack_groups(specs, tmp_path, "s", None)
    assert [[s.name for s in g] for g in stacks] == [["a", "b", "c"], ["ws", "ws2"], ["h"]]
    assert [s.name for s in rest] == ["ddp", "mcem"]
    stacks, _ = stack_groups(specs, tmp_path, "s", 2)
    assert [[s.name for s in g] for g in stacks] == [["a", "b"], ["c"], ["ws", "ws2"], ["h"]]


def test_grouping_refuses_an_unreadable_checkpoint_with_a_message(tmp_path):
    spec = RunSpec("a", make_config({"budget": 10**6}))
    folder = RunFolder.of(tmp_path, "s", "a")
    folder.checkpoint.parent.mkdir(parents=True)
    folder.checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ResultsError, match=r"last.ckpt cannot be read.*delete"):
        stack_groups([spec], tmp_path, "s", None)
    assert folder.checkpoint.read_bytes() == b"not a checkpoint"
