"""SIGTERM and SIGINT in every phase of every command: the process ends within seconds with exit status 143 / 130
and one line, leaves nothing half-written, and a stopped training continues exactly. Outside a training loop
each command is held in its phase by a named pipe it reads (nothing writes to it) or by long work, so the signal
lands there."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import vae.protocol.measurement as measurement
from vae.algorithms.mcem import MCEM
from vae.config import RunSpec, make_config
from vae.runs.interrupted import Interrupted, raise_on_signals
from vae.runs.train import run_one

ROOT = Path(__file__).resolve().parent.parent
# lr fixed: no selection; checkpoint_minutes: none periodic, so a checkpoint after a signal was written on it
TINY = dict(
    hidden=20,
    nz=2,
    n_train=2000,
    budget=20000,
    eval_start=5000,
    lr=0.02,
    adagrad_warmup=10,
    wandb="disabled",
    checkpoint_minutes=10.0,
)
# Figure 3's estimator on a few points, few transitions (the in-process tests)
MARGINAL = dict(
    TINY, evaluation="marginal", marginal_points=50, marginal_samples=6, marginal_burnin=4, marginal_leapfrog=2
)
# MCEM, one HMC transition and one M-step per iteration, evaluated by the prior-started estimator
MCEM_TINY = dict(
    MARGINAL,
    algorithm="mcem",
    n_train=500,
    mcem_leapfrog=1,
    mcem_msteps=1,
    adagrad_warmup=2,
    budget=30000,
    eval_start=10000,
    eval_every=10000,
    eval_spacing="linear",
)


def command(*args: object) -> list[str]:
    return [sys.executable, "-m", "vae", *map(str, args)]


def sweep_file(folder: Path, **config: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sweep = folder / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "sig", "base": config}))
    return sweep


def stop(proc: subprocess.Popen, signum: int = signal.SIGTERM, within: float = 10.0) -> str:
    """Send ``signum``; the process must end within ``within`` seconds with 128 + signum and say one line (no
    traceback) on stderr, which names the signal and is returned."""
    line = stop_or_finish(proc, signum, within)
    assert line is not None, "the command had returned before the signal came"
    return line


def stop_or_finish(proc: subprocess.Popen, signum: int = signal.SIGTERM, within: float = 10.0) -> str | None:
    """``stop`` for a process whose command may have returned: the signal is then ignored and the process exits 0
    within ``within`` seconds, without a word (None is returned)."""
    proc.send_signal(signum)
    sent = time.monotonic()
    _, err = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    assert took < within, f"{took:.1f} s to stop"
    lines = [line for line in err.splitlines() if line.strip() and "deprecated" not in line]  # Lightning's aside
    if proc.returncode == 0:
        assert not lines, err
        return None
    assert proc.returncode == 128 + signum, err
    assert len(lines) == 1 and lines[0].startswith(signal.Signals(signum).name), err
    return lines[0]


def wait_for_line(proc: subprocess.Popen, text: str) -> None:
    """Read the process's stdout until a line holds ``text``."""
    for line in proc.stdout:
        if text in line:
            return
    pytest.fail(f"the process ended ({proc.wait()}) before printing {text!r}: {proc.stderr.read()}")


def popen(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )


def held(path: Path) -> Path:
    """Replace ``path`` by a named pipe: a command that opens it to read waits there."""
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


# ---------------------------------------------------------------- outside a training loop
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_train_stops_while_reading_its_sweep_file(tmp_path, signum):
    proc = popen("train", held(tmp_path / "sweep.yaml"), "--results-dir", tmp_path / "results")
    time.sleep(1.0)
    assert "train stopped" in stop(proc, signum)
    assert not (tmp_path / "results").exists()


def test_a_signal_during_an_import_stops_the_command_once_the_import_is_whole(tmp_path, monkeypatch):
    """Start-up spends seconds importing torch, numpy and Lightning. A signal raised inside an import can leave a
    package half imported, whose next use fails in its own way (numpy: "cannot load module more than once per
    process", or a RecursionError) instead of ending the command with its one line; so the signal is acted on
    as soon as the import is whole. Here a module sends itself SIGTERM halfway through its own import."""
    package = tmp_path / "halfway"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "part.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\nWHOLE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    began = time.monotonic()
    with pytest.raises(Interrupted, match="SIGTERM: stopped") as stopped, raise_on_signals("stopped"):
        import halfway.part  # noqa: F401

        time.sleep(30)  # the signal is acted on here
    assert time.monotonic() - began < 10
    assert stopped.value.exit_status == 143
    assert sys.modules["halfway.part"].WHOLE
    assert sys.modules["halfway"].part is sys.modules["halfway.part"]


@pytest.mark.slow
def test_signals_at_random_moments_of_start_up_each_end_the_command_with_its_line(tmp_path):
    """SIGTERM at 40 random moments of ``tables``' first 3 s (its imports of torch, numpy, Lightning and pandas),
    the command then held reading its settings file: every one ends it with its one line and exit status 143
    (a few minutes). Raised inside an import, a signal could be lost (the command then waited on its settings
    file for good) or end in a traceback: 2 of 60 such moments in one measurement."""
    settings = held(tmp_path / "tables.yaml")
    moments = random.Random(0)
    for _ in range(40):
        proc = popen("tables", "--results-dir", tmp_path / "results", "--settings", settings)
        time.sleep(moments.uniform(0.1, 3.0))
        assert "tables stopped" in stop(proc)


def test_train_stopped_at_any_moment_of_its_start_up_continues(tmp_path, data_root):
    """Signals at several moments of start-up (imports, data, the Trainer's setup, the first steps): each ends
    the process with one line, and the run then finishes. On a fast machine a later moment may find the run
    finished and the process exiting: it then exits 0 (``test_a_signal_while_train_exits_leaves_its_status``)."""
    sweep = sweep_file(tmp_path, **TINY)
    for delay in (1.0, 3.0, 5.0):
        proc = popen("train", sweep, "--results-dir", tmp_path, "--data-dir", data_root)
        time.sleep(delay)
        if proc.poll() is None and stop_or_finish(proc) is None:
            break
    subprocess.run(
        command("train", sweep, "--results-dir", tmp_path, "--data-dir", data_root), check=True, capture_output=True
    )
    assert pd.read_csv(tmp_path / "runs" / "sig" / "seed0" / "metrics.csv")["samples"].iloc[-1] == 20000


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_train_exits_leaves_its_status(tmp_path, data_root, signum):
    """Once the command has returned, the interpreter's clean-up of torch and Lightning takes about a second, in
    which no Python handler runs: a signal there is ignored, and the process exits 0 without a word (not killed
    by the signal, nor with a traceback). A signal that still finds the command running stops it as anywhere."""
    sweep = sweep_file(tmp_path, **TINY)
    proc = popen("train", sweep, "--results-dir", tmp_path, "--data-dir", data_root)
    wait_for_line(proc, "1 run(s) in")  # the summary: the table's head and its one row follow, then train returns
    proc.stdout.readline(), proc.stdout.readline()
    time.sleep(0.2)
    stop_or_finish(proc, signum)
    assert pd.read_csv(tmp_path / "runs" / "sig" / "seed0" / "metrics.csv")["samples"].iloc[-1] == 20000


@pytest.fixture(scope="module")
def results(tmp_path_factory, data_root) -> Path:
    """A results folder with one finished run."""
    folder = tmp_path_factory.mktemp("results")
    run_one("sig", RunSpec("seed0", make_config(dict(TINY, budget=10000))), folder, data_root)
    return folder


@pytest.mark.parametrize("what", ["tables", "figures", "log-px"])
def test_a_results_command_stopped_at_its_work_changes_nothing(results, tmp_path, data_root, what):
    """Past start-up's imports: ``tables`` and ``figures`` held reading their settings file, ``log-px`` inside its
    importance sampling (k = 10⁶ samples per image, minutes). The runs' files are read only when they are regular
    files, so a named pipe in a run folder would not hold a command."""
    folder = tmp_path / "results"
    shutil.copytree(results, folder)
    run = folder / "runs" / "sig" / "seed0"
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    if what == "log-px":
        args = [run, "--data-dir", data_root, "--k", 10**6]
    else:
        settings = held(tmp_path / f"{what}.yaml")
        args = ["--results-dir", folder, "--reference", folder / "none", "--settings", settings]
        args += ["--no-wandb"] if what == "figures" else []
    proc = subprocess.Popen(command(what, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    time.sleep(2.0)
    assert f"{what} stopped" in stop(proc)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # nothing written or left


# ---------------------------------------------------------------- inside a training loop
def test_a_signal_inside_an_evaluation_stops_it_between_hmc_transitions(tmp_path, data_root):
    """Figure 3's estimator at its first point (after §5's selection, which prints a line) takes minutes here;
    the signal ends it within seconds, at that point, without its row: the rerun evaluates it again."""
    sweep = sweep_file(
        tmp_path,
        **dict(
            MARGINAL,
            lr=None,
            lr_candidates=[0.02],
            lr_select_samples=5000,
            marginal_points=1000,
            marginal_burnin=100000,
        ),
    )
    proc = popen("train", sweep, "--results-dir", tmp_path, "--data-dir", data_root)
    wait_for_line(proc, "picked")
    time.sleep(1.0)
    assert "stopped at 5,000 of 20,000 samples" in stop(proc)
    run = tmp_path / "runs" / "sig" / "seed0"
    assert json.loads((run / "status.json").read_text())["samples"] == 5000
    assert not (run / "metrics.csv").exists()


def test_a_signal_inside_a_block_of_mcem_iterations_stops_it_after_the_current_iteration(tmp_path, data_root):
    """A block of 50 MCEM iterations over 2000 chains takes tens of seconds here; the signal ends it after the
    current iteration, checkpointed inside the block."""
    per_iteration = 15 * 2000
    sweep = sweep_file(
        tmp_path,
        **dict(
            MCEM_TINY,
            hidden=100,
            n_train=2000,
            mcem_leapfrog=10,
            mcem_msteps=5,
            lr=None,
            lr_candidates=[0.02],
            lr_select_samples=per_iteration,
            steps_per_call=50,
            budget=200 * per_iteration,
            eval_start=100 * per_iteration,
            eval_every=100 * per_iteration,
        ),
    )
    proc = popen("train", sweep, "--results-dir", tmp_path, "--data-dir", data_root)
    wait_for_line(proc, "picked")
    time.sleep(1.0)
    stop(proc, within=8.0)
    samples = json.loads((tmp_path / "runs" / "sig" / "seed0" / "status.json").read_text())["samples"]
    assert per_iteration < samples < 51 * per_iteration


def marginal_rows(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "runs" / "t" / "run" / "metrics.csv")


def test_a_run_stopped_inside_an_evaluation_resumes_to_the_uninterrupted_numbers(tmp_path, data_root, monkeypatch):
    spec = RunSpec("run", make_config(MARGINAL))
    run_one("t", spec, tmp_path / "clean", data_root)
    estimator = measurement.log_marginal_hmc
    calls = []

    def signalled(*args, **kwargs):  # the second estimate (the test set's) of the second point gets a signal
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return estimator(*args, **kwargs)

    monkeypatch.setattr(measurement, "log_marginal_hmc", signalled)
    with pytest.raises(Interrupted):
        run_one("t", spec, tmp_path / "stopped", data_root)
    checkpoint = tmp_path / "stopped" / "runs" / "t" / "run" / "checkpoints" / "last.ckpt"
    axis = torch.load(checkpoint, weights_only=False)["sample_axis"]
    second = marginal_rows(tmp_path / "clean")["samples"][1]
    assert axis["samples"] == second and [row["samples"] for row in axis["history"]] == [5000]
    monkeypatch.setattr(measurement, "log_marginal_hmc", estimator)
    run_one("t", spec, tmp_path / "stopped", data_root)
    pd.testing.assert_frame_equal(
        marginal_rows(tmp_path / "stopped").drop(columns=["time/train_s", "time/samples_per_s"]),
        marginal_rows(tmp_path / "clean").drop(columns=["time/train_s", "time/samples_per_s"]),
        check_exact=True,
    )


def test_an_mcem_run_stopped_after_an_iteration_inside_a_block_resumes_to_the_uninterrupted_numbers(
    tmp_path, data_root, monkeypatch
):
    spec = RunSpec("run", make_config(MCEM_TINY))
    run_one("t", spec, tmp_path / "clean", data_root)
    iteration = MCEM.step
    calls = []

    def signalled(self):  # the seventh iteration gets a signal: the block (ten, to the first point) stops after it
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        iteration(self)

    monkeypatch.setattr(MCEM, "step", signalled)
    with pytest.raises(Interrupted):
        run_one("t", spec, tmp_path / "stopped", data_root)
    checkpoint = tmp_path / "stopped" / "runs" / "t" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["sample_axis"]["samples"] == 7 * 2 * 500
    monkeypatch.setattr(MCEM, "step", iteration)
    run_one("t", spec, tmp_path / "stopped", data_root)
    drop = ["time/train_s", "time/samples_per_s"]
    pd.testing.assert_frame_equal(
        marginal_rows(tmp_path / "stopped").drop(columns=drop),
        marginal_rows(tmp_path / "clean").drop(columns=drop),
        check_exact=True,
    )
