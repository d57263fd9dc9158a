"""Exact resume after SIGKILL, divergence that keeps the last good state, and unwritable results."""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
import yaml

from vae.__main__ import main
from vae.config import RunSpec, make_config
from vae.protocol.sample_axis import RunDiverged
from vae.protocol.schedule import eval_points
from vae.runs.folder import ResumeSafeWandbLogger, RunFolder
from vae.runs.train import run_one

KILL = dict(hidden=20, nz=2, n_train=2000, samples=400000, eval_start=5000, lr_select_samples=5000,
            adagrad_warmup=10, wandb="disabled", checkpoint_minutes=0.002)


def command(sweep: Path, results: Path, data_root: Path) -> list[str]:
    return [sys.executable, "-m", "vae", "train", str(sweep), "--results-dir", str(results),
            "--data-dir", str(data_root)]


def test_sigkill_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(tmp_path, data_root):
    sweep = tmp_path / "kill.yaml"
    sweep.write_text(yaml.safe_dump({"name": "kill", "base": KILL}))
    run = tmp_path / "killed" / "runs" / "kill" / "seed0"
    proc = subprocess.Popen(command(sweep, tmp_path / "killed", data_root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.ckpt").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    delay = random.uniform(0.0, 1.5)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, f"the run finished within {delay:.2f}s, before the kill"
    killed_at = pd.read_csv(run / "metrics.csv")["samples"].max()
    assert killed_at < KILL["samples"]

    subprocess.run(command(sweep, tmp_path / "killed", data_root), check=True, capture_output=True)
    subprocess.run(command(sweep, tmp_path / "clean", data_root), check=True, capture_output=True)
    killed = pd.read_csv(run / "metrics.csv")
    clean = pd.read_csv(tmp_path / "clean" / "runs" / "kill" / "seed0" / "metrics.csv")
    assert killed["samples"].tolist() == eval_points(5000, KILL["samples"], 10, 100)
    cols = ["samples", "train/elbo", "test/elbo", "lr"]
    pd.testing.assert_frame_equal(killed[cols], clean[cols], check_exact=True)
    a = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "clean" / "runs" / "kill" / "seed0" / "checkpoints" / "last.ckpt",
                   weights_only=False)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["sample_axis"]["samples"] == b["sample_axis"]["samples"] == KILL["samples"]


def test_divergence_stops_with_a_message_and_keeps_the_last_good_state(tmp_path, data_root):
    cfg = dict(KILL, samples=20000, lr=0.02, checkpoint_minutes=10.0)
    run_one("t", RunSpec("r", make_config(cfg)), tmp_path, data_root)
    run = tmp_path / "runs" / "t" / "r"
    saved = {p: p.read_bytes() for p in [run / "metrics.csv", run / "status.json", run / "checkpoints" / "last.ckpt"]}

    class Poison(L.Callback):
        """A weight that stops being finite as soon as training continues."""

        def on_train_batch_start(self, trainer, module, *args):
            with torch.no_grad():
                module.stack.decoder.hidden.weight.view(-1)[0] = float("nan")

    with pytest.raises(RunDiverged, match=r"not finite at step 251 \(25100 samples.*step size 0.02"):
        run_one("t", RunSpec("r", make_config(dict(cfg, samples=40000))), tmp_path, data_root, callbacks=[Poison()])
    for path, content in saved.items():
        assert path.read_bytes() == content, path


def test_unwritable_results_folder_is_refused_before_training(tmp_path, data_root, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "base": dict(KILL, samples=10000)}))
    assert main(["train", str(sweep), "--results-dir", str(blocker), "--data-dir", str(data_root)]) == 2
    err = capsys.readouterr().err
    assert "cannot write to the results folder" in err and "--results-dir" in err


class FakeRun:
    def __init__(self):
        self.calls = []

    def log(self, metrics, step=None):
        self.calls.append((step, metrics))


def test_wandb_logger_never_sends_a_point_twice_and_steps_by_samples(tmp_path):
    (tmp_path / "wandb_logged").write_text("6300")
    fake = FakeRun()
    logger = ResumeSafeWandbLogger(RunFolder(tmp_path), experiment=fake)
    for s in (5000, 6300, 7900):
        logger.log_metrics({"samples": s, "train/elbo": -1.0, "test/elbo": -1.0})
    assert [step for step, _ in fake.calls] == [7900]
    assert (tmp_path / "wandb_logged").read_text() == "7900"
    assert ResumeSafeWandbLogger(RunFolder(tmp_path), experiment=FakeRun()).logged_upto == 7900
