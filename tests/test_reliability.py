"""Exact resume after SIGKILL, W&B runs that lose nothing to kills, divergence that keeps the last good state,
and unwritable results."""

import random
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
import wandb
import yaml
from helpers import train_command
from wandb.proto import wandb_internal_pb2

from vae.__main__ import main
from vae.config import RunSpec, make_config
from vae.protocol.divergence import RunDiverged
from vae.protocol.schedule import eval_points
from vae.runs.folder import RunFolder
from vae.runs.loggers import ResumeSafeWandbLogger
from vae.runs.train import run_one
from vae.runs.wandb_history import durable_steps, records

KILL = dict(
    hidden=20,
    nz=2,
    n_train=2000,
    budget=400000,
    eval_start=5000,
    lr_select_samples=5000,
    adagrad_warmup=10,
    running_every=30000,
    wandb="disabled",
    checkpoint_minutes=0.002,
)
LOGGED = sorted(
    set(eval_points(5000, KILL["budget"], 10, 100)) | set(range(30000, KILL["budget"], 30000)) | {KILL["budget"]}
)  # the evaluations and the running averages


def test_sigkill_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(tmp_path, data_root):
    sweep = tmp_path / "kill.yaml"
    sweep.write_text(yaml.safe_dump({"name": "kill", "base": KILL}))
    run = tmp_path / "killed" / "runs" / "kill" / "seed0"
    proc = subprocess.Popen(
        train_command(sweep, tmp_path / "killed", data_root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.ckpt").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    delay = random.uniform(0.0, 1.5)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, f"the run finished within {delay:.2f}s, before the kill"
    killed_at = pd.read_csv(run / "metrics.csv")["samples"].max()
    assert killed_at < KILL["budget"]

    subprocess.run(train_command(sweep, tmp_path / "killed", data_root), check=True, capture_output=True)
    subprocess.run(train_command(sweep, tmp_path / "clean", data_root), check=True, capture_output=True)
    killed = pd.read_csv(run / "metrics.csv")
    clean = pd.read_csv(tmp_path / "clean" / "runs" / "kill" / "seed0" / "metrics.csv")
    assert killed["samples"].tolist() == LOGGED
    cols = ["samples", "train/elbo", "test/elbo", "train/running_elbo", "lr"]
    pd.testing.assert_frame_equal(killed[cols], clean[cols], check_exact=True)
    a = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "clean" / "runs" / "kill" / "seed0" / "checkpoints" / "last.ckpt", weights_only=False)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["sample_axis"]["samples"] == b["sample_axis"]["samples"] == KILL["budget"]


def test_divergence_stops_with_a_message_and_keeps_the_last_good_state(tmp_path, data_root):
    cfg = dict(KILL, budget=20000, lr=0.02, checkpoint_minutes=10.0)
    run_one("t", RunSpec("r", make_config(cfg)), tmp_path, data_root)
    run = tmp_path / "runs" / "t" / "r"
    saved = {p: p.read_bytes() for p in [run / "metrics.csv", run / "status.json", run / "checkpoints" / "last.ckpt"]}

    class Poison(L.Callback):
        """A weight that stops being finite as soon as training continues."""

        def on_train_batch_start(self, trainer, module, *args):
            with torch.no_grad():
                module.stack.decoder.hidden.weight.view(-1)[0] = float("nan")

    with pytest.raises(RunDiverged, match=r"not finite at step 251 \(25100 samples.*step size 0.02"):
        run_one("t", RunSpec("r", make_config(dict(cfg, budget=40000))), tmp_path, data_root, callbacks=[Poison()])
    for path, content in saved.items():
        assert path.read_bytes() == content, path


def test_unwritable_results_folder_is_refused_before_training(tmp_path, data_root, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "base": dict(KILL, budget=10000)}))
    assert main(["train", str(sweep), "--results-dir", str(blocker), "--data-dir", str(data_root)]) == 2
    err = capsys.readouterr().err
    assert "cannot write to the results folder" in err and "--results-dir" in err


class FakeRun:
    def __init__(self):
        self.calls = []

    def log(self, metrics, step=None):
        self.calls.append((step, metrics))


def offline_session(folder: RunFolder, steps: list[int]) -> Path:
    """A real offline W&B session of the run in ``folder`` that logged ``steps``; returns its ``.wandb`` file."""
    run = wandb.init(
        mode="offline", project="p", id=folder.wandb_id(), dir=str(folder.path), resume="allow", reinit="create_new"
    )
    for s in steps:
        run.log({"samples": s, "train/elbo": -s / 1000}, step=s)
    run.finish()
    wandb.teardown()  # the W&B service ends with the session, so later subprocesses do not attach to it
    (session,) = [p for p in (folder.path / "wandb").glob(f"offline-run-*-{folder.wandb_id()}/*.wandb")]
    return session


def history_step(raw: bytes) -> int | None:
    record = wandb_internal_pb2.Record()
    record.ParseFromString(raw)
    return record.history.step.num if record.WhichOneof("record_type") == "history" else None


def test_wandb_points_count_as_sent_only_once_on_disk_and_the_rest_is_sent_from_the_csv(tmp_path):
    folder = RunFolder(tmp_path)
    pd.DataFrame(
        {
            "samples": [100, 200, 300, 400, 500],
            "train/elbo": [-1.0] * 5,
            "test/elbo": [-2.0] * 5,
            "test/marginal": [None, None, None, None, -3.0],
        }
    ).to_csv(folder.metrics_file, index=False)
    session = offline_session(folder, [100, 200, 300, 400])
    assert durable_steps(tmp_path / "wandb", folder.wandb_id()) == [100, 200, 300, 400]
    # the writer was killed in the middle of the third history record: only the first two count as sent
    data = session.read_bytes()
    third = next(r for r in records(session) if history_step(r) == 300)
    session.write_bytes(data[: data.index(third) + len(third) // 2])
    assert durable_steps(tmp_path / "wandb", folder.wandb_id()) == [100, 200]
    fake = FakeRun()
    logger = ResumeSafeWandbLogger(folder, run=fake)
    logger.send_missing()
    assert [step for step, _ in fake.calls] == [300, 400, 500]
    assert "test/marginal" not in fake.calls[0][1] and fake.calls[2][1]["test/marginal"] == -3.0
    for s in (400, 500, 600):  # a resumed run reaches 400 and 500 again, then goes on
        logger.log_metrics({"samples": s, "train/elbo": -1.0, "test/elbo": -1.0})
    assert [step for step, _ in fake.calls] == [300, 400, 500, 600]
    # a file that is not W&B's, or holds only its header, holds no points
    session.write_bytes(data[:7])
    assert durable_steps(tmp_path / "wandb", folder.wandb_id()) == []
    session.write_bytes(b"garbage" * 100)
    assert durable_steps(tmp_path / "wandb", folder.wandb_id()) == []


@pytest.mark.slow  # repeated kills and reruns: about 40 s
def test_wandb_run_holds_every_csv_point_exactly_once_after_repeated_sigkills(tmp_path, data_root):
    sweep = tmp_path / "kill.yaml"
    sweep.write_text(yaml.safe_dump({"name": "kill", "base": dict(KILL, wandb="offline")}))
    folder = RunFolder(tmp_path / "runs" / "kill" / "seed0")
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen(
            train_command(sweep, tmp_path, data_root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        before = len(folder.metrics()) if folder.metrics_file.is_file() else 0
        deadline = time.monotonic() + 120
        # kill it while it logs: once it has written a new point, after a random delay
        while proc.poll() is None and (not folder.metrics_file.is_file() or len(folder.metrics()) <= before):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(random.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        kills += proc.wait() == -signal.SIGKILL
        if kills == 3:
            break
    assert kills == 3
    subprocess.run(train_command(sweep, tmp_path, data_root), check=True, capture_output=True)
    samples = folder.metrics()["samples"].tolist()
    assert samples == LOGGED
    assert len(list((folder.path / "wandb").glob("offline-run-*"))) >= 4
    assert durable_steps(folder.path / "wandb", folder.wandb_id()) == samples
