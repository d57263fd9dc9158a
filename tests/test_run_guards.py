"""Guards around a training process: SIGINT / SIGTERM stop it checkpointed and a rerun continues exactly; one
process at a time per run folder; results files get the mode the umask gives; the reference runs, and runs that git
tracks, are never discarded."""

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
import yaml
from helpers import train_args, train_command

from vae.__main__ import main
from vae.config import RunSpec, make_config
from vae.protocol.schedule import eval_points
from vae.runs.folder import ResultsError, RunFolder
from vae.runs.interrupted import Interrupted
from vae.runs.train import run_one, train_stack

ROOT = Path(__file__).resolve().parent.parent
# checkpoint_minutes: none periodic, so a checkpoint that exists after a signal was written on the signal
STOP = dict(
    hidden=20,
    nz=2,
    n_train=2000,
    budget=100000,
    eval_start=5000,
    lr_select_samples=5000,
    adagrad_warmup=10,
    wandb="disabled",
    checkpoint_minutes=10.0,
)


def sweep_file(tmp_path: Path, **overrides) -> Path:
    sweep = tmp_path / "stop.yaml"
    sweep.write_text(yaml.safe_dump({"name": "stop", "base": {**STOP, **overrides}}))
    return sweep


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.is_file():
        assert proc.poll() is None and time.monotonic() < deadline, f"no {path.name} before the run ended"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root) -> Path:
    """The run folder of the STOP run trained without interruption."""
    tmp = tmp_path_factory.mktemp("clean")
    subprocess.run(train_command(sweep_file(tmp), tmp, data_root), check=True, capture_output=True)
    return tmp / "runs" / "stop" / "seed0"


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_at_a_step_end_checkpointed_and_a_rerun_continues_exactly(
    tmp_path, data_root, uninterrupted, signum, status
):
    sweep = sweep_file(tmp_path)
    run = tmp_path / "runs" / "stop" / "seed0"
    proc = subprocess.Popen(
        train_command(sweep, tmp_path, data_root), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wait_for(run / "metrics.csv", proc)  # training, past the step-size selection
    proc.send_signal(signum)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == status, err
    assert "Traceback" not in err
    (line,) = [s for s in err.splitlines() if "stopped" in s]
    reached = int(re.search(r"seed0 stopped at ([\d,]+) of 100,000 samples", line)[1].replace(",", ""))
    assert line.startswith(signum.name) and "run the same command again" in line
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["sample_axis"]["samples"] == reached
    assert json.loads((run / "status.json").read_text())["samples"] == reached < STOP["budget"]

    subprocess.run(train_command(sweep, tmp_path, data_root), check=True, capture_output=True)
    resumed, clean = pd.read_csv(run / "metrics.csv"), pd.read_csv(uninterrupted / "metrics.csv")
    assert resumed["samples"].tolist() == eval_points(5000, STOP["budget"], 10, 100)
    cols = ["samples", "train/elbo", "test/elbo", "lr"]
    pd.testing.assert_frame_equal(resumed[cols], clean[cols], check_exact=True)
    a = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_to_every_ddp_rank_stops_them_at_one_step_and_rank_0_alone_says_so(tmp_path, data_root):
    """As a scheduler or Ctrl+C does, the signal goes to the whole process group: both ranks of a 2-process CPU
    DDP run (gloo) stop at the same step, save, and exit; one line says so."""
    sweep = sweep_file(
        tmp_path,
        hidden=50,
        nz=3,
        lr=0.02,
        M=101,
        budget=40000,
        eval_start=1000,
        eval_per_decade=2,
        eval_batch=3000,
        checkpoint_minutes=0.002,
        devices=2,
        accelerator="cpu",
    )
    run = tmp_path / "runs" / "stop" / "seed0"
    proc = subprocess.Popen(
        train_command(sweep, tmp_path, data_root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(run / "checkpoints" / "last.ckpt", proc)
        os.killpg(proc.pid, signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing is left unless a rank hung
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    (line,) = [s for s in err.splitlines() if "stopped" in s]
    reached = int(re.search(r"seed0 stopped at ([\d,]+) of 40,000 samples", line)[1].replace(",", ""))
    assert RunFolder(run).samples_done() == reached
    subprocess.run(train_command(sweep, tmp_path, data_root), check=True, capture_output=True)
    assert json.loads((run / "status.json").read_text())["samples"] >= 40000


class SendSignal(L.Callback):
    """Sends SIGTERM to this process at the end of the first training step past ``samples``."""

    def __init__(self, samples: int) -> None:
        self.samples = samples

    def on_train_batch_end(self, trainer, module, *args):
        if module.samples > self.samples:
            os.kill(os.getpid(), signal.SIGTERM)
            self.samples = float("inf")


def test_a_signal_checkpoints_every_run_of_a_stack_and_the_handlers_are_restored(tmp_path, data_root):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    specs = [RunSpec(f"nz{nz}", make_config(dict(STOP, budget=20000, lr=0.02, nz=nz))) for nz in (2, 3)]
    with pytest.raises(Interrupted, match=r"^SIGTERM: nz2, nz3 stopped at ([\d,]+) of 20,000 samples") as stopped:
        train_stack("t", specs, tmp_path, data_root, callbacks=[SendSignal(6300)])
    assert stopped.value.exit_status == 143
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    reached = int(re.search(r"at ([\d,]+) of", str(stopped.value))[1].replace(",", ""))
    assert 6300 < reached < 20000
    for name in ("nz2", "nz3"):
        folder = RunFolder.of(tmp_path, "t", name)
        assert folder.samples_done() == folder.status()["samples"] == reached
    assert {s["samples"] for s in train_stack("t", specs, tmp_path, data_root).values()} == {20000}
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_training_runs_outside_the_main_thread(tmp_path, data_root):
    """Signal handlers can only be set in the main thread; elsewhere training runs without them."""
    spec = RunSpec("r", make_config(dict(STOP, budget=10000, lr=0.02)))
    results = []
    thread = threading.Thread(target=lambda: results.append(run_one("t", spec, tmp_path, data_root)))
    thread.start()
    thread.join()
    assert results[0]["samples"] == 10000


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """(inode, mtime, content) of every file of a run folder; of ``wandb/``, which the first run's W&B process
    keeps writing, only the entries at its top (a second W&B session would add a run folder there)."""
    files = {p: p.lstat() for p in folder.rglob("*") if p.parent == folder / "wandb" or "wandb" not in p.parts}
    return {
        str(p): (s.st_ino, s.st_mtime_ns, p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
        for p, s in files.items()
    }


def test_a_second_process_on_the_same_run_is_refused_and_a_killed_holder_frees_the_run(tmp_path, data_root):
    sweep = sweep_file(tmp_path, wandb="offline", checkpoint_minutes=0.002)
    run = tmp_path / "runs" / "stop" / "seed0"
    # each command its own W&B service, as from a shell (not the one an earlier test started in this process)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} | {"WANDB_SILENT": "true"}
    first = subprocess.Popen(
        train_command(sweep, tmp_path, data_root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        wait_for(run / "checkpoints" / "last.ckpt", first)
        first.send_signal(signal.SIGSTOP)  # still holding the run, and changing no file while the second tries
        before = snapshot(run)
        assert (run / "wandb_id").is_file() and list((run / "wandb").glob("offline-run-*"))
        second = subprocess.run(
            train_command(sweep, tmp_path, data_root),
            check=False,
            capture_output=True,
            text=True,
            env=env | {"PYTHONWARNINGS": "ignore"},
        )
        assert second.returncode == 2, second.stderr
        (line,) = second.stderr.splitlines()
        assert line.startswith("error: ") and str(run) in line
        assert f"process {first.pid} on {socket.gethostname()}" in line
        assert snapshot(run) == before
    finally:
        first.kill()
        first.wait()
    third = subprocess.run(
        train_command(sweep, tmp_path, data_root), check=False, capture_output=True, text=True, env=env
    )
    assert third.returncode == 0, third.stderr
    assert json.loads((run / "status.json").read_text())["samples"] == STOP["budget"]


def test_every_run_of_a_stack_is_locked_before_anything_is_written(tmp_path, data_root):
    specs = [RunSpec(f"nz{nz}", make_config(dict(STOP, budget=10000, lr=0.02, nz=nz))) for nz in (2, 3)]
    held = rf"runs/t/nz3 is being trained by process {os.getpid()} "
    with RunFolder.of(tmp_path, "t", "nz3").lock(), pytest.raises(ResultsError, match=held):
        train_stack("t", specs, tmp_path, data_root)
    for name in ("nz2", "nz3"):
        assert not (tmp_path / "runs" / "t" / name / "config.yaml").exists()
    assert set(train_stack("t", specs, tmp_path, data_root)) == {"nz2", "nz3"}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_results_files_get_the_mode_the_umask_gives(tmp_path, data_root, umask, mode):
    sweep = sweep_file(tmp_path, budget=10000, lr=0.02)
    subprocess.run(train_command(sweep, tmp_path, data_root), check=True, capture_output=True, umask=umask)
    run = tmp_path / "runs" / "stop" / "seed0"
    for name in ("config.yaml", "metrics.csv", "status.json", "lock"):
        assert (run / name).stat().st_mode & 0o777 == mode, name


def test_a_run_ahead_of_its_missing_checkpoint_is_never_restarted_silently(tmp_path, data_root, uninterrupted, capsys):
    """Results copied without their checkpoint (the committed reference runs, say) at a larger budget: refused,
    unchanged; with --restart trained again from zero, exactly as a fresh run."""
    run = tmp_path / "runs" / "stop" / "seed0"
    run.mkdir(parents=True)
    for name in ("config.yaml", "metrics.csv", "status.json"):
        (run / name).write_bytes((uninterrupted / name).read_bytes())
    before = snapshot(run)
    sweep = sweep_file(tmp_path, budget=200000)
    assert main(train_args(sweep, tmp_path, data_root)) == 2
    refused = capsys.readouterr().err
    assert "has reached 100,000 samples but has no checkpoint" in refused and "--restart" in refused
    assert snapshot(run) == before
    assert main([*train_args(sweep_file(tmp_path, budget=10000), tmp_path, data_root), "--restart"]) == 0
    cols = ["samples", "train/elbo", "test/elbo"]
    clean = pd.read_csv(uninterrupted / "metrics.csv")[cols]
    pd.testing.assert_frame_equal(pd.read_csv(run / "metrics.csv")[cols], clean[clean["samples"] <= 10000])
    assert json.loads((run / "status.json").read_text())["samples"] == 10000


def tree(root: Path) -> dict[str, str | None]:
    """Every entry under ``root`` by path: a file by the SHA-256 of its content, a folder or link by None."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file() and not p.is_symlink()
        else None
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("spelling", ["reference", "experiments/../reference", "a link to it", "runs linked into it"])
def test_restart_into_the_reference_folder_is_refused_and_changes_nothing(spelling, tmp_path, monkeypatch, capsys):
    """However the results folder reaches the repository's reference runs (from another working folder, where the
    default --reference names nothing), --restart is refused before anything is written, and no destructive command
    is suggested."""
    results = {"a link to it": tmp_path / "link", "runs linked into it": tmp_path / "results"}.get(spelling, spelling)
    (tmp_path / "link").symlink_to(ROOT / "reference")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "runs").symlink_to(ROOT / "reference" / "runs")
    monkeypatch.chdir(ROOT if spelling in ("reference", "experiments/../reference") else tmp_path)
    before = tree(ROOT / "reference")
    command = ["train", str(ROOT / "experiments" / "fig2_mnist_aevb.yaml"), "--only", "nz3-seed0"]
    assert main([*command, "--results-dir", str(results), "--restart"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "lies in the reference folder" in line and "no training command writes to" in line, line
    assert "--restart" not in line and "RESTART" not in line and "discard" not in line
    assert tree(ROOT / "reference") == before


def test_the_reference_named_by_the_command_is_refused_too(tmp_path, data_root, capsys):
    mine = tmp_path / "mine"
    (mine / "runs" / "stop" / "seed0").mkdir(parents=True)
    (mine / "runs" / "stop" / "seed0" / "status.json").write_text('{"samples": 100000}')
    before = tree(mine)
    args = train_args(sweep_file(tmp_path), tmp_path / "x" / ".." / "mine", data_root)
    assert main([*args, "--reference", str(mine), "--restart"]) == 2
    assert "lies in the reference folder" in capsys.readouterr().err
    assert tree(mine) == before


def test_restart_keeps_a_run_that_git_tracks_unless_told_to_discard_it(tmp_path, data_root, capsys):
    sweep = sweep_file(tmp_path, budget=10000, lr=0.02)
    assert main(train_args(sweep, tmp_path, data_root)) == 0
    run = tmp_path / "runs" / "stop" / "seed0"
    shutil.rmtree(run / "checkpoints")  # committed results come without their checkpoint
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "runs"], check=True)
    before = snapshot(run)
    capsys.readouterr()
    assert main([*train_args(sweep, tmp_path, data_root), "--restart"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "holds files that git tracks" in line and "--results-dir" in line and "--discard-tracked" not in line
    assert snapshot(run) == before
    assert main([*train_args(sweep, tmp_path, data_root), "--restart", "--discard-tracked"]) == 0
    assert RunFolder(run).samples_done() == 10000


def test_taking_a_run_removes_the_temporary_files_a_kill_left(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    stale = [
        folder.path / f"{name}.{os.urandom(6).hex()}.tmp"
        for name in ("metrics.csv", "status.json", "config.yaml", "wandb_id")
    ]
    kept = [folder.path / "log_px.json.0123456789ab.tmp", folder.path / "notes.tmp", folder.path / "metrics.csv"]
    for path in stale + kept:
        path.write_text("x")
    with folder.lock():
        assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


@pytest.mark.slow  # three trainings through a selection of 9000 steps: minutes on two cores
def test_a_signal_during_the_step_size_selection_stops_it_within_seconds_and_a_rerun_selects_again(tmp_path, data_root):
    """§5's selection is one long training step (3 candidates x 3000 steps here); a signal stops it between two
    blocks of steps_per_call steps, checkpointed at the initial state, and the rerun selects from the start: the
    same run as one never interrupted."""
    settings = dict(lr=None, lr_select_samples=300000, budget=400000, eval_start=300000)
    for folder in ("stopped", "clean"):
        (tmp_path / folder).mkdir()
    sweep = sweep_file(tmp_path / "stopped", **settings)
    run = tmp_path / "stopped" / "runs" / "stop" / "seed0"
    proc = subprocess.Popen(
        train_command(sweep, tmp_path / "stopped", data_root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(run / "config.yaml", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    err = proc.communicate(timeout=120)[1]
    assert time.monotonic() - sent < 15 and proc.returncode == 143, err
    assert "Traceback" not in err
    (line,) = [s for s in err.splitlines() if "stopped" in s]
    assert "stopped at 0 of 400,000 samples" in line and "step-size selection" in line
    assert json.loads((run / "status.json").read_text())["samples"] == 0

    subprocess.run(train_command(sweep, tmp_path / "stopped", data_root), check=True, capture_output=True)
    clean = tmp_path / "clean"
    subprocess.run(train_command(sweep_file(clean, **settings), clean, data_root), check=True, capture_output=True)
    cols = ["samples", "train/elbo", "test/elbo", "lr"]
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "metrics.csv")[cols],
        pd.read_csv(clean / "runs" / "stop" / "seed0" / "metrics.csv")[cols],
        check_exact=True,
    )
