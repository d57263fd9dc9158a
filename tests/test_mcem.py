"""Monte Carlo EM (App. E) and the marginal-likelihood evaluation of Figure 3, end to end on tiny budgets."""

import pandas as pd
import pytest
import torch

from vae.algorithms import MCEM
from vae.config import ConfigError, RunSpec, make_config
from vae.data import load_dataset
from vae.runs.train import run_one

TINY = dict(
    algorithm="mcem",
    evaluation="marginal",
    dataset="mnist",
    n_train=200,
    hidden=20,
    nz=2,
    lr=0.02,
    adagrad_warmup=5,
    eval_spacing="linear",
    eval_start=10000,
    eval_every=10000,
    budget=30000,
    marginal_points=50,
    marginal_samples=10,
    marginal_burnin=10,
    marginal_leapfrog=2,
    wandb="disabled",
    mcem_counting="msteps",
)  # 1000 samples per iteration, so the points fall on round numbers


def test_an_iteration_counts_every_pass_over_the_data_as_figure_3_does():
    # 10 leapfrog gradient passes and 5 weight updates: the first N_train = 50000 point of Figure 3 is at 15 * 50000
    passes = TINY | {"mcem_counting": "passes"}
    assert make_config({}).mcem_counting == "passes"
    assert MCEM.step_samples(make_config(passes)) == 15 * 200
    assert MCEM.step_samples(make_config(passes | {"mcem_leapfrog": 4, "mcem_msteps": 2})) == 6 * 200
    assert MCEM.step_samples(make_config(TINY)) == 5 * 200


def test_mcem_has_no_encoder_and_moves_decoder_and_chains(data_root):
    model = MCEM([make_config(TINY)])
    assert model.encoder is None
    assert model.samples_per_step == 5 * 200
    model.attach(*load_dataset(model.cfg, data_root))
    assert model.chains.shape == (1, 200, 2)
    start_chains = model.chains.clone()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train_steps(3)
    after = model.state_dict()
    assert set(before) == set(after) and all(k.startswith("decoder.") for k in after)
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
    assert not torch.equal(start_chains, model.chains) and model.samples == 3000


def test_mcem_run_logs_the_marginal_likelihood_and_extends_exactly(tmp_path, data_root):
    """The chains and the HMC step size are part of the checkpoint: a run extended from 20k to 30k samples
    equals one run straight to 30k."""
    long = run_one("t", RunSpec("m", make_config(TINY)), tmp_path / "long", data_root)
    run_one("t", RunSpec("m", make_config(TINY | {"budget": 20000})), tmp_path / "ext", data_root)
    extended = run_one("t", RunSpec("m", make_config(TINY)), tmp_path / "ext", data_root)
    assert long["samples"] == extended["samples"] == 30000
    a = pd.read_csv(tmp_path / "long" / "runs" / "t" / "m" / "metrics.csv")
    b = pd.read_csv(tmp_path / "ext" / "runs" / "t" / "m" / "metrics.csv")
    assert list(a["samples"]) == [10000, 20000, 30000]
    assert "train/elbo" not in a and a["train/marginal"].notna().all()
    assert a[["train/marginal", "test/marginal"]].to_numpy() == pytest.approx(
        b[["train/marginal", "test/marginal"]].to_numpy(), rel=1e-6
    )


def test_aevb_run_with_marginal_evaluation_logs_both_bound_and_likelihood(tmp_path, data_root):
    cfg = make_config(TINY | {"algorithm": "aevb", "budget": 10000, "marginal_estimator": "is", "marginal_is_k": 200})
    run_one("t", RunSpec("a", cfg), tmp_path, data_root)
    row = pd.read_csv(tmp_path / "runs" / "t" / "a" / "metrics.csv").iloc[-1]
    assert row["train/marginal"] >= row["train/elbo"] - 0.5  # log p(x) estimate sits above the bound


def test_mcem_trains_one_model_per_stack():
    with pytest.raises(ConfigError, match="one model per stack"):
        MCEM([make_config(TINY), make_config(TINY | {"seed": 1})])


def test_mcem_needs_the_marginal_evaluation():
    with pytest.raises(Exception, match="evaluation=marginal"):
        make_config({"algorithm": "mcem"})
