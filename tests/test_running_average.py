"""The paper's kind of train curve, ``train/running_elbo``: every ``running_every`` samples, the average of the
minibatch bounds of the iterations since the last one, summed on the device as the steps run."""

import os
import signal
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from helpers import stack_configs

from vae.algorithms import AEVB, WakeSleep
from vae.algorithms.running import RunningBound
from vae.config import RunSpec, make_config
from vae.models.bounds import elbo
from vae.protocol.schedule import eval_points
from vae.runs.interrupted import Interrupted
from vae.runs.train import run_one

TINY = dict(
    hidden=20,
    nz=2,
    n_train=2000,
    budget=20000,
    eval_start=5000,
    lr=0.02,
    adagrad_warmup=10,
    running_every=3000,
    wandb="disabled",
)


@pytest.mark.parametrize(
    "kind, estimator", [(AEVB, "B"), (AEVB, "A"), (WakeSleep, "A")], ids=["aevb-B", "aevb-A", "wakesleep"]
)
def test_an_iteration_adds_the_bound_of_its_minibatch_before_the_update(mnist, kind, estimator):
    """Recomputed from the iteration's own minibatch and noise with the models as they were before the step:
    eq. (8)'s estimator for AEVB, the one-sample bound log p(x|z) + log p(z) - log q(z|x) (estimator A) for
    the wake phase of wake-sleep, whatever the padding of a stack of three latent sizes."""
    stack = kind(stack_configs(estimator=estimator))
    stack.attach(*mnist)
    stack.train_steps(7)  # past the Adagrad warm-up of 5 steps: the step moves the weights
    draws: dict[str, torch.Tensor] = {}
    minibatch, normal = stack.draws.minibatch, stack.draws.normal

    def kept_minibatch(train_x: torch.Tensor) -> torch.Tensor:
        draws.setdefault("x", minibatch(train_x))
        return draws["x"]

    def kept_normal(*shape: int, **kwargs) -> torch.Tensor:
        eps = normal(*shape, **kwargs)
        draws.setdefault("eps", eps)
        return eps

    stack.draws.minibatch, stack.draws.normal = kept_minibatch, kept_normal
    before = stack.replicate(range(stack.k))
    start = stack.running.sums.clone()
    stack.train_steps(1)
    eps = draws["eps"] if kind is AEVB else draws["eps"].unsqueeze(0)  # wake-sleep draws one z per datapoint
    with torch.no_grad():
        expected = elbo(draws["x"], before.encoder, before.decoder, estimator, len(eps), eps=eps).sum(-1)
        after = elbo(draws["x"], stack.encoder, stack.decoder, estimator, len(eps), eps=eps).sum(-1)
    added = stack.running.sums - start
    torch.testing.assert_close(added, expected.double(), rtol=1e-5, atol=1e-3)
    assert not torch.allclose(added, after.double(), rtol=1e-5, atol=1e-3), "the bound after the update was added"


def test_the_logged_value_is_the_mean_of_its_windows_minibatch_bounds(tmp_path, data_root, monkeypatch):
    """Every running_every samples (and at the budget) the mean of the minibatch bounds since the last one,
    recorded here on the host step by step; the evaluation rows are those of a run that logs no running
    average, to the last bit: summing the bounds disturbs neither the trajectory nor the random streams."""
    seen: list[float] = []
    accumulate = RunningBound.accumulate

    def recorded(self: RunningBound, sums: torch.Tensor | None) -> None:
        if sums is not None:  # None in the run that logs no running average
            seen.append(float(sums.sum()) / make_config(TINY).M)
        accumulate(self, sums)

    monkeypatch.setattr(RunningBound, "accumulate", recorded)
    run_one("t", RunSpec("run", make_config(TINY)), tmp_path / "a", data_root)
    logged = pd.read_csv(tmp_path / "a" / "runs" / "t" / "run" / "metrics.csv")
    running = logged.dropna(subset=["train/running_elbo"])
    assert running["samples"].tolist() == [3000, 6000, 9000, 12000, 15000, 18000, 20000]
    assert len(seen) == 200
    start = 0
    for samples, value in zip(running["samples"], running["train/running_elbo"], strict=True):
        window = seen[start // 100 : samples // 100]
        assert value == pytest.approx(sum(window) / len(window), rel=1e-12), samples
        start = samples
    assert running["train/running_elbo"].iloc[-1] > running["train/running_elbo"].iloc[0] + 30

    run_one("t", RunSpec("run", make_config(dict(TINY, running_every=None))), tmp_path / "b", data_root)
    plain = pd.read_csv(tmp_path / "b" / "runs" / "t" / "run" / "metrics.csv")
    assert "train/running_elbo" not in plain
    evaluated = logged.dropna(subset=["test/elbo"]).reset_index(drop=True)
    assert evaluated["samples"].tolist() == eval_points(5000, 20000, 10, 100)
    cols = ["samples", "train/elbo", "test/elbo", "lr"]
    pd.testing.assert_frame_equal(evaluated[cols], plain[cols], check_exact=True)


class StopAt(L.Callback):
    """Sends this process SIGTERM once the run has passed ``samples``: it stops there, checkpointed."""

    def __init__(self, samples: int) -> None:
        self.samples, self.sent = samples, False

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: object) -> None:
        if module.samples >= self.samples and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_the_running_average_continues_across_the_step_size_selection_and_a_resume(tmp_path, data_root):
    """The winner of §5's selection brings its running sum along (its first window holds the selection's
    iterations), and a run stopped inside a window and resumed from its checkpoint logs what an uninterrupted
    run does."""
    selecting = dict(TINY, lr=None, lr_select_samples=5000, running_every=6000)

    def metrics(results: Path) -> pd.DataFrame:
        return pd.read_csv(results / "runs" / "t" / "run" / "metrics.csv")

    lr = run_one("t", RunSpec("run", make_config(selecting)), tmp_path / "selected", data_root)["lr"]
    forced = RunSpec("run", make_config(dict(selecting, lr=lr)))
    run_one("t", forced, tmp_path / "forced", data_root)
    with pytest.raises(Interrupted):
        run_one("t", forced, tmp_path / "resumed", data_root, callbacks=[StopAt(6000)])
    checkpoint = tmp_path / "resumed" / "runs" / "t" / "run" / "checkpoints" / "last.ckpt"
    assert 6000 < torch.load(checkpoint, weights_only=False)["sample_axis"]["samples"] < 12000
    run_one("t", forced, tmp_path / "resumed", data_root)
    cols = ["samples", "train/elbo", "test/elbo", "train/running_elbo"]
    assert metrics(tmp_path / "forced")["samples"].tolist()[:2] == [5000, 6000]
    pd.testing.assert_frame_equal(
        metrics(tmp_path / "selected")[cols], metrics(tmp_path / "forced")[cols], check_exact=True
    )
    pd.testing.assert_frame_equal(
        metrics(tmp_path / "resumed")[cols], metrics(tmp_path / "forced")[cols], check_exact=True
    )
