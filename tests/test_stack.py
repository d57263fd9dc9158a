"""The stack engine: a sweep's AEVB runs trained together equal the same runs trained one by one, through
the step-size selection, the run folders, W&B and checkpoints that either path can continue."""

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import vae.algorithms.base
import vae.stack
from vae.config import RunSpec, load_sweep, make_config
from vae.engine import Engine, run_sweep
from vae.stack import read_run_checkpoint, stack_groups

# Three latent sizes, so the stack pads; n_train 1000 keeps the full-set evaluations cheap. The step size is
# selected from three candidates, per model. (Different seeds in one stack: tests/test_batched.py.)
SWEEP = {
    "name": "st",
    "base": dict(dataset="mnist", n_train=1000, hidden=40, lr_candidates=[0.003, 0.01, 0.04], lr_select_samples=2000,
                 adagrad_warmup=5, samples=6000, eval_start=1000, eval_per_decade=3, eval_batch=4000,
                 wandb="disabled"),
    "grid": {"nz": [2, 5, 9]},
}
RUNS = ["nz2-seed0", "nz5-seed0", "nz9-seed0"]


@contextmanager
def float64() -> Iterator[None]:
    """Float64 everywhere, data included, so that rounding cannot hide a difference between the two paths:
    in float32, Adagrad's normalized steps amplify rounding in the weights of rarely lit pixels (the normal
    path alone, fused against multi-tensor Adagrad, differs by 3.5e-4 in relative norm after these steps)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for module in (vae.algorithms.base, vae.stack):
                load = module.load_dataset
                patch.setattr(module, "load_dataset", lambda *a, load=load: tuple(t.double() for t in load(*a)))
            yield
    finally:
        torch.set_default_dtype(old)


def train(results: Path, data_root: Path, engine: str, exact: bool = True, **overrides) -> dict:
    sweep_file = results.parent / f"{results.name}.yaml"
    sweep_file.write_text(yaml.safe_dump(SWEEP))
    with float64() if exact else nullcontext():
        return run_sweep(load_sweep(sweep_file, overrides), results, data_root, engine=Engine(engine))


def metrics(results: Path, run: str) -> pd.DataFrame:
    return pd.read_csv(results / "runs" / "st" / run / "metrics.csv")


def weights(results: Path, run: str) -> dict[str, torch.Tensor]:
    path = results / "runs" / "st" / run / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def assert_same_runs(a: Path, b: Path) -> None:
    """Run folder b holds the runs of a (and possibly more evaluation points): same values, same weights."""
    for run in RUNS:
        ma, mb = metrics(a, run), metrics(b, run)
        mb = mb[mb["samples"].isin(ma["samples"])]
        assert list(ma["samples"]) == list(mb["samples"]), run
        for col in ("train/elbo", "test/elbo", "lr"):
            assert ma[col].to_numpy() == pytest.approx(mb[col].to_numpy(), rel=1e-10), (run, col)
        wa, wb = weights(a, run), weights(b, run)
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
        assert (results / "runs" / "st" / run / "config.yaml").is_file()
    assert_same_runs(local_results, results)


def test_a_run_moves_between_the_stack_and_the_normal_path_through_its_checkpoint(local, tmp_path, data_root):
    """Half the budget on one path, the rest on the other, in both orders: the same runs as one path alone.
    This checks that the stack writes and reads the normal path's checkpoint (weights, Adagrad state, step
    size, random stream, history)."""
    local_results, _ = local
    for first, second in (("stack", "local"), ("local", "stack")):
        results = tmp_path / f"{first}-{second}"
        train(results, data_root, first, samples=3000)
        assert metrics(results, RUNS[0])["samples"].iloc[-1] == 3000
        train(results, data_root, second)
        assert_same_runs(local_results, results)


def test_each_model_of_a_stack_has_its_own_wandb_run(tmp_path, data_root):
    results = tmp_path / "wb"
    train(results, data_root, "stack", exact=False, samples=2000, wandb="offline")
    ids = set()
    for run in RUNS:
        folder = results / "runs" / "st" / run
        (offline,) = (folder / "wandb").glob("offline-run-*")
        ids.add(offline.name.rsplit("-", 1)[-1])
        assert offline.name.endswith((folder / "wandb_id").read_text().strip())
        assert (folder / "wandb_logged").read_text() == "2000"
    assert len(ids) == len(RUNS)


def test_stacks_group_runs_that_can_share_one(tmp_path):
    def spec(name: str, **config) -> RunSpec:
        return RunSpec(name, make_config({"samples": 10**6, **config}))

    specs = [spec("a", nz=3), spec("b", nz=20, seed=4), spec("ws", algorithm="wakesleep"), spec("h", hidden=7),
             spec("c", nz=5), spec("ddp", devices=2)]
    stacks, rest = stack_groups(specs, tmp_path, "s", None)
    assert [[s.name for s in g] for g in stacks] == [["a", "b", "c"], ["h"]]
    assert [s.name for s in rest] == ["ws", "ddp"]
    stacks, _ = stack_groups(specs, tmp_path, "s", 2)
    assert [[s.name for s in g] for g in stacks] == [["a", "b"], ["c"], ["h"]]


def test_a_checkpoint_saved_before_the_accumulator_held_eps_is_converted(local):
    """Checkpoints from before the fused Adagrad kept ``sum_t g_t^2`` without eps; reading one adds eps."""
    local_results, _ = local
    path = local_results / "runs" / "st" / RUNS[0] / "checkpoints" / "last.ckpt"
    cfg = make_config(yaml.safe_load((path.parent.parent / "config.yaml").read_text()))
    new, _ = read_run_checkpoint(cfg, path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    for group in ckpt["optimizer_states"][0]["param_groups"]:
        del group["sum_includes_eps"]
    for state in ckpt["optimizer_states"][0]["state"].values():
        state["sum"] -= cfg.adagrad_eps
    old_path = path.with_name("old.ckpt")
    torch.save(ckpt, old_path)
    old, _ = read_run_checkpoint(cfg, old_path)
    for name, value in new["sums"].items():
        torch.testing.assert_close(old["sums"][name], value, rtol=1e-6, atol=0)
