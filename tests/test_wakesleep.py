"""Wake-sleep: each phase moves only its own networks; the pipeline runs it like AEVB."""

import pandas as pd
import torch

from vae.algorithms import WakeSleep
from vae.algorithms.optim import StackedAdagrad
from vae.config import RunSpec, make_config
from vae.runs.train import run_one


class Recorder(StackedAdagrad):
    """The phase's optimizer, recording the gradients of both networks at each of its steps."""

    def __init__(self, module, owner, other):
        super().__init__(module.parameters(), lrs=[0.05], eps=1e-8, warmup=0)
        self.owner, self.other, self.seen = owner, other, []

    def step(self, closure=None):
        self.seen.append(
            (
                [None if p.grad is None else p.grad.clone() for p in self.owner.parameters()],
                [None if p.grad is None else p.grad.clone() for p in self.other.parameters()],
            )
        )
        super().step()


def test_wake_moves_only_the_decoder_and_sleep_only_the_encoder():
    ws = WakeSleep([make_config({"nz": 2, "hidden": 8, "n_train": 1000})])
    ws.attach(torch.rand(1000, 784), torch.rand(10, 784))
    wake = Recorder(ws.decoder, ws.decoder, ws.encoder)
    sleep = Recorder(ws.encoder, ws.encoder, ws.decoder)
    ws._optimizers = [wake, sleep]  # in the order of ws.optimized_modules()
    before = {k: v.clone() for k, v in ws.state_dict().items()}
    ws.train_steps(3)
    assert ws.samples == 300
    previous_sleep = [None] * len(list(ws.encoder.parameters()))
    for (own_w, other_w), (own_s, other_s) in zip(wake.seen, sleep.seen, strict=True):
        assert all(g is not None and g.abs().sum() > 0 for g in own_w)
        assert all(a is b is None or torch.equal(a, b) for a, b in zip(other_w, previous_sleep, strict=True)), (
            "the wake loss reached the encoder"
        )
        previous_sleep = own_s
        assert all(g is not None and g.abs().sum() > 0 for g in own_s)
        assert all(torch.equal(a, b) for a, b in zip(other_s, own_w, strict=True)), "the sleep loss reached the decoder"
    after = ws.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)


def test_wake_sleep_runs_through_the_pipeline_and_improves_the_bound(tmp_path, data_root):
    cfg = make_config(
        {
            "algorithm": "wakesleep",
            "hidden": 20,
            "nz": 2,
            "n_train": 2000,
            "budget": 20000,
            "eval_start": 5000,
            "lr": 0.02,
            "adagrad_warmup": 10,
            "wandb": "disabled",
        }
    )
    status = run_one("t", RunSpec("ws", cfg), tmp_path, data_root)
    m = pd.read_csv(tmp_path / "runs" / "t" / "ws" / "metrics.csv")
    assert status["samples"] == 20000 and m["test/elbo"].iloc[-1] > m["test/elbo"].iloc[0] + 5
