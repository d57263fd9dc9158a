"""Scale-out on CPU: a real 2-process Lightning DDP run (gloo), the sharded evaluation and gradient
all-reduce in isolation, and a sweep fanned out through Ray. Every process compared here runs one thread (see
``helpers.threads``): the machine's default thread count would differ between the two sides."""

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from helpers import threads, train_command

from vae.algorithms import AEVB
from vae.algorithms.evaluation import evaluate
from vae.algorithms.parallel import reduce_gradients, share
from vae.config import load_sweep, make_config
from vae.runs.engine import Engine, run_sweep

SWEEP = {
    "name": "ddp",
    # M = 101 does not divide over 2 ranks: rank 0 takes 51 datapoints, rank 1 takes 50
    "base": dict(
        dataset="mnist",
        hidden=50,
        nz=3,
        binarize="dynamic",
        lr=0.02,
        adagrad_warmup=5,
        M=101,
        budget=4000,
        eval_start=1000,
        eval_per_decade=2,
        eval_batch=3000,
        running_every=2000,
        wandb="disabled",
    ),
    "grid": {"algorithm": ["aevb", "wakesleep"]},
}
RUNS = ["algorithm" + a + "-seed0" for a in ("aevb", "wakesleep")]


def train(results: Path, data_root: Path, *overrides: str) -> None:
    sweep = results / "sweep.yaml"
    sweep.parent.mkdir(parents=True, exist_ok=True)
    sweep.write_text(yaml.safe_dump(SWEEP))
    cmd = [*train_command(sweep, results, data_root), "--set", *overrides]
    # one thread per process: Lightning would give each DDP rank half the cores, the single process all of them
    env = os.environ | {"WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


def metrics(results: Path, run: str) -> pd.DataFrame:
    return pd.read_csv(results / "runs" / "ddp" / run / "metrics.csv")


def test_two_process_ddp_run_equals_the_single_process_run(tmp_path, data_root):
    """Same global minibatches and noise, gradients summed over ranks, the sample counter global, the
    evaluation sharded and reduced: the DDP run reproduces the single-process run. Rank 0 alone writes."""
    train(tmp_path / "one", data_root)
    train(tmp_path / "two", data_root, "devices=2", "accelerator=cpu", "wandb=offline")
    for run in RUNS:
        one, two = metrics(tmp_path / "one", run), metrics(tmp_path / "two", run)
        # evaluations at 1010, 3131 and 4040; running averages of the minibatch bounds at 2020 and 4040
        assert list(two["samples"]) == list(one["samples"]) == [1010, 2020, 3131, 4040]
        cols = ["train/elbo", "test/elbo", "train/running_elbo"]
        # before any sampled pixel can differ, both runs agree to float32 rounding
        assert two.loc[0, cols[:2]].to_numpy() == pytest.approx(one.loc[0, cols[:2]].to_numpy(), rel=1e-6)
        # wake-sleep's binary fantasies may flip a pixel on a rounding difference later on
        tol = 1e-6 if "aevb" in run else 1e-3
        assert two[cols].to_numpy() == pytest.approx(one[cols].to_numpy(), rel=tol, nan_ok=True)
        folder = tmp_path / "two" / "runs" / "ddp" / run
        assert len(list((folder / "wandb").glob("offline-run-*"))) == 1
        assert yaml.safe_load((folder / "status.json").read_text())["ranks"] == 2


def _rank_main(rank: int, out: Path, x: torch.Tensor, cfg: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["TEST_PORT"])
    torch.set_num_threads(1)  # as the single process it is compared with
    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = AEVB([make_config(cfg)])
    (value,) = evaluate(model, x, [torch.Generator().manual_seed(7)])
    for p in model.parameters():
        p.grad = torch.full_like(p, rank + 1.0)
    reduce_gradients(list(model.parameters()))
    mine = share(cfg["M"])
    torch.save(
        dict(value=value, grads=[p.grad for p in model.parameters()], share=(mine.start, mine.stop)),
        out / f"rank{rank}.pt",
    )
    dist.destroy_process_group()


def test_sharded_evaluation_and_gradient_sum_match_one_process(tmp_path):
    cfg = dict(hidden=20, nz=2, binarize="dynamic", eval_batch=300, M=7, init_std=0.3)
    x = torch.rand(2500, 784)  # 9 evaluation chunks: 5 on rank 0, 4 on rank 1
    with threads(1):
        (single,) = evaluate(AEVB([make_config(cfg)]), x, [torch.Generator().manual_seed(7)])
    os.environ["TEST_PORT"] = str(29500 + os.getpid() % 1000)
    mp.spawn(_rank_main, args=(tmp_path, x, cfg), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for r in ranks:
        assert r["value"] == pytest.approx(single, rel=1e-9, abs=0)
        assert all(bool((g == 3.0).all()) for g in r["grads"])
    assert [r["share"] for r in ranks] == [(0, 4), (4, 7)]


def test_sweep_through_ray_writes_every_run_like_the_local_engine(tmp_path, data_root):
    """The Ray task of one CPU runs one thread (Ray sets OMP_NUM_THREADS=1 for it, or passes on the driver's,
    here 1); so does the local run, which would otherwise use the machine's default."""
    sweep = load_sweep_dict(tmp_path)
    with threads(1):
        local = run_sweep(sweep, tmp_path / "local", data_root)
        fanned = run_sweep(sweep, tmp_path / "ray", data_root, engine=Engine("ray", cpus_per_run=1))
    assert set(fanned) == set(local) == set(RUNS)
    for run in RUNS:
        a, b = metrics(tmp_path / "local", run), metrics(tmp_path / "ray", run)
        assert list(a["samples"]) == list(b["samples"])
        cols = ["train/elbo", "test/elbo", "train/running_elbo"]
        assert b[cols].to_numpy() == pytest.approx(a[cols].to_numpy(), rel=1e-5, nan_ok=True)
        assert fanned[run]["samples"] == 4040


def load_sweep_dict(tmp_path: Path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(SWEEP))
    return load_sweep(path, {})


def test_more_ranks_than_datapoints_is_refused():
    with pytest.raises(Exception, match="ranks exceed the minibatch"):
        make_config(dict(M=4, devices=4, num_nodes=2))
