"""Checkpoints: never written with a state that is not finite; verified when read (checksum, readable, run, config),
also across a kill between the renames; a full disk or file size limit that leaves the last checkpoint and no
temporary file; file modes from the umask."""

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from vae.config import RunSpec, make_config
from vae.protocol.divergence import RunDiverged, not_finite
from vae.runs.checkpoint import RunCheckpointIO, checksum_file
from vae.runs.folder import ResultsError, RunFolder
from vae.runs.train import run_one, train_stack

# tiny runs, a checkpoint at every Lightning step (each step reaches the next evaluation point here)
BASE = dict(
    hidden=20,
    nz=2,
    n_train=2000,
    budget=10000,
    eval_start=5000,
    lr=0.02,
    adagrad_warmup=10,
    wandb="disabled",
    checkpoint_minutes=1e-6,
)
SWEEP = "ck"


def spec(seed: int, **overrides) -> RunSpec:
    return RunSpec(f"seed{seed}", make_config(dict(BASE, seed=seed, **overrides)))


def folder(results: Path, seed: int) -> RunFolder:
    return RunFolder.of(results, SWEEP, f"seed{seed}")


def files(path: Path) -> dict[Path, bytes]:
    """Every file under ``path`` with its content."""
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


class Killed(Exception):
    """Stands for a kill."""


class StopAfterCheckpoint(L.Callback):
    """Interrupts training as soon as the checkpoint at ``path`` has changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.before = path.read_bytes() if path.is_file() else None

    def on_train_batch_end(self, trainer, module, *args) -> None:
        if self.path.is_file() and self.path.read_bytes() != self.before:
            raise Killed


@pytest.fixture(scope="module")
def started(tmp_path_factory, data_root) -> Path:
    """Runs seed0 and seed1, each interrupted after its first checkpoint (5000 samples, half its budget)."""
    results = tmp_path_factory.mktemp("started")
    for seed in (0, 1):
        stop = StopAfterCheckpoint(folder(results, seed).checkpoint)
        with pytest.raises(Killed):
            run_one(SWEEP, spec(seed), results, data_root, callbacks=[stop])
    return results


@pytest.fixture
def results(started, tmp_path) -> Path:
    """A copy of the started runs for one test to change."""
    return Path(shutil.copytree(started, tmp_path / "results"))


def resume(results: Path, data_root: Path) -> dict:
    """Run ck/seed0 again (to its budget)."""
    return run_one(SWEEP, spec(0), results, data_root)


def test_a_state_that_is_not_finite_is_never_checkpointed(results, data_root):
    """A stack of both runs, model 1 poisoned between two evaluation points: the run stops when the next checkpoint
    is due, naming the run and the sample count, and neither run's checkpoint changes."""
    before = files(results / "runs")

    class Poison(L.Callback):
        def on_train_batch_start(self, trainer, module, *args):
            with torch.no_grad():
                module.stack.decoder.hidden.weight[1, 0, 0] = float("nan")

    specs = [spec(0, steps_per_call=5), spec(1, steps_per_call=5)]  # 5 steps per Lightning step: no evaluation
    with pytest.raises(
        RunDiverged,
        match=r"^\[seed1\] the parameters or the optimizer state are not finite at step "
        r"55 \(5500 samples; .*No checkpoint was written",
    ):
        train_stack(SWEEP, specs, results, data_root, callbacks=[Poison()])
    for seed in (0, 1):
        checkpoints = folder(results, seed).checkpoint.parent
        assert files(checkpoints) == {p: c for p, c in before.items() if p.parent == checkpoints}
        assert not not_finite(torch.load(checkpoints / "last.ckpt", weights_only=False))


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 100] = bytes(b ^ 0xFF for b in data[middle : middle + 100])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


@pytest.mark.parametrize("damage", [flip, truncate])
def test_a_damaged_checkpoint_is_refused_and_nothing_changes(results, data_root, damage):
    run = folder(results, 0)
    damage(run.checkpoint)
    before = files(run.path)
    with pytest.raises(ResultsError) as e:
        resume(results, data_root)
    assert str(e.value).startswith(f"the checkpoint {run.checkpoint} does not match its checksum in last.ckpt.sha256")
    assert f"delete {run.checkpoint.parent} to restart run ck/seed0 from zero" in str(e.value)
    assert files(run.path) == before


def test_a_checkpoint_without_checksum_that_cannot_be_read_is_refused(results, data_root):
    run = folder(results, 0)
    checksum_file(run.checkpoint).unlink()
    truncate(run.checkpoint)
    before = files(run.path)
    with pytest.raises(ResultsError, match=r"last\.ckpt cannot be read \(.*\); it is truncated or damaged"):
        resume(results, data_root)
    assert files(run.path) == before


@pytest.mark.parametrize("with_checksum", [True, False])
def test_the_checkpoint_of_another_run_is_refused(results, data_root, with_checksum):
    seed0, seed1 = folder(results, 0), folder(results, 1)
    shutil.copy(seed1.checkpoint, seed0.checkpoint)
    if with_checksum:
        shutil.copy(checksum_file(seed1.checkpoint), checksum_file(seed0.checkpoint))
    before = files(seed0.path)
    problem = "is the checkpoint of run ck/seed1, not of this run" if with_checksum else "does not match its checksum"
    with pytest.raises(ResultsError, match=f"last.ckpt {problem}"):
        resume(results, data_root)
    assert files(seed0.path) == before


def test_a_copied_run_folder_is_refused_under_another_name(results, data_root):
    """Same config, checkpoint and checksum file, but the checkpoint names the run it was written for."""
    copy = RunFolder(shutil.copytree(folder(results, 0).path, results / "runs" / SWEEP / "copy"))
    before = files(copy.path)
    with pytest.raises(ResultsError, match=r"last\.ckpt is the checkpoint of run ck/seed0, not of this run"):
        run_one(SWEEP, RunSpec("copy", spec(0).config), results, data_root)
    assert files(copy.path) == before


def test_a_checkpoint_from_before_checksums_is_accepted_after_its_config_check(results, data_root):
    """A checkpoint as written before checksums (no checksum file, no run named in it): another run's is refused
    by its config; the run's own continues, and the next checkpoint gets its checksum file."""
    legacy = {}
    for seed in (0, 1):
        run = folder(results, seed)
        checkpoint = torch.load(run.checkpoint, weights_only=False)
        del checkpoint["run"]
        torch.save(checkpoint, run.checkpoint)
        checksum_file(run.checkpoint).unlink()
        legacy[seed] = run.checkpoint.read_bytes()
    seed0 = folder(results, 0)
    seed0.checkpoint.write_bytes(legacy[1])
    with pytest.raises(
        ResultsError,
        match=r"last\.ckpt was written with another config than .*config\.yaml "
        r"\(seed: 1 there, 0 here\)",
    ):
        resume(results, data_root)
    seed0.checkpoint.write_bytes(legacy[0])
    assert resume(results, data_root)["samples"] == 10000
    digest = hashlib.sha256(seed0.checkpoint.read_bytes()).hexdigest()
    assert checksum_file(seed0.checkpoint).read_text().split()[0] == digest


def test_a_kill_between_the_checksum_and_the_checkpoint_renames_still_resumes(results, data_root):
    """The checksum file is renamed into place first and also vouches for the checkpoint it replaces."""
    run = folder(results, 0)
    old = run.checkpoint.read_bytes()
    with pytest.raises(Killed):
        run_one(SWEEP, spec(0), results, data_root, callbacks=[StopAfterCheckpoint(run.checkpoint)])
    run.checkpoint.write_bytes(old)  # the new checksum file, the old checkpoint
    assert resume(results, data_root)["samples"] == 10000


def write_sweep(path: Path) -> Path:
    """The sweep file of run ck/seed0, for the command line."""
    path.write_text(yaml.safe_dump({"name": SWEEP, "base": dict(BASE, seed=0)}))
    return path


def assert_out_of_space(stderr: str, run: RunFolder, reason: str, before: dict[Path, bytes]) -> None:
    """One error line that names the checkpoint and the space the next one needs; the old files as they were."""
    error = stderr.strip().splitlines()[-1]
    assert error.startswith(
        f"error: cannot write the checkpoint {run.checkpoint}: {reason}. The disk holding "
        f"{run.checkpoint.parent} is full (or a file size limit is reached): the next "
        "checkpoint needs "
    ), error
    assert "The last checkpoint is kept" in error
    need = int(error.split("needs ")[1].split(" bytes")[0].replace(",", ""))
    size = len(before[run.checkpoint])
    assert size < need < 1.1 * size  # the new checkpoint and its checksum file: a little more history than the old
    assert files(run.checkpoint.parent) == before  # no temporary file left


def test_a_file_size_limit_keeps_the_last_checkpoint_and_says_how_much_space_is_needed(results, data_root, tmp_path):
    """The resumed run writes under RLIMIT_FSIZE below a checkpoint's size: write() fails with EFBIG."""
    run = folder(results, 0)
    before = files(run.checkpoint.parent)
    limit = len(before[run.checkpoint]) // 2
    argv = [
        "vae",
        "train",
        str(write_sweep(tmp_path / "ck.yaml")),
        "--results-dir",
        str(results),
        "--data-dir",
        str(data_root),
    ]
    child = (
        "import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); sys.argv = {argv!r}; "
        "runpy.run_module('vae', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, env=os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
    )
    assert done.returncode == 2, done.stderr
    assert_out_of_space(done.stderr, run, "File too large", before)


def test_a_full_disk_keeps_the_last_checkpoint_and_says_how_much_space_is_needed(results, data_root, tmp_path):
    """The run folder on a tmpfs with room for half a checkpoint more (in a mount namespace of its own, gone with
    the command): write() fails with ENOSPC."""
    disk = tmp_path / "disk"
    disk.mkdir()
    probe = ["unshare", "--mount", "mount", "-t", "tmpfs", "tmpfs", str(disk)]
    if shutil.which("unshare") is None or subprocess.run(probe, capture_output=True).returncode:
        pytest.skip("mounting a tmpfs in a mount namespace needs root")
    run = folder(results, 0)
    used = sum(-(-p.stat().st_size // 4096) * 4096 for p in run.path.rglob("*") if p.is_file())
    room = used + len(run.checkpoint.read_bytes()) // 2
    sweep, after = write_sweep(tmp_path / "ck.yaml"), tmp_path / "after"
    q = {
        k: shlex.quote(str(v))
        for k, v in dict(
            disk=disk, run=run.path, after=after, sweep=sweep, data=data_root, python=sys.executable
        ).items()
    }
    script = (
        f"mount -t tmpfs -o size={room} tmpfs {q['disk']} && mkdir -p {q['disk']}/runs/{SWEEP} && "
        f"cp -a {q['run']} {q['disk']}/runs/{SWEEP}/ && {q['python']} -m vae train {q['sweep']} "
        f"--results-dir {q['disk']} --data-dir {q['data']}; status=$?; cp -a {q['disk']} {q['after']}; "
        "exit $status"
    )
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    before = {after / p.relative_to(results): c for p, c in files(run.checkpoint.parent).items()}
    error = done.stderr.replace(str(disk), str(after))  # the files as the command left them, copied out
    assert_out_of_space(error, folder(after, 0), "No space left on device", before)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)], ids=["umask022", "umask027"])
def test_checkpoint_files_take_the_mode_of_the_umask(tmp_path, umask, mode):
    run = RunFolder.of(tmp_path, "s", "r")
    run.checkpoint.parent.mkdir(parents=True)
    for stale in (run.checkpoint, checksum_file(run.checkpoint)):  # temporary files left by a killed run
        stale.with_name(stale.name + ".tmp").touch(mode=0o600)
    old = os.umask(umask)
    try:
        RunCheckpointIO([run]).save_checkpoint(
            {"epoch": 0, "runs": [{"state_dict": {"w": torch.zeros(2)}}]}, run.checkpoint
        )
    finally:
        os.umask(old)
    assert sorted(p.name for p in run.checkpoint.parent.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]
    for path in (run.checkpoint, checksum_file(run.checkpoint)):
        assert path.stat().st_mode & 0o777 == mode, path


def test_a_run_trained_on_another_kind_of_device_is_refused_and_nothing_changes(results, data_root):
    """A checkpoint holds its device's random streams (a CUDA generator's state is not a CPU generator's): a run
    trained on a GPU is refused on the CPU in one line when its budget is extended, before anything is written."""
    resume(results, data_root)
    run = folder(results, 0)
    status = json.loads(run.status_file.read_text())
    assert status["device"] == "cpu"
    run.status_file.write_text(json.dumps(status | {"device": "cuda:0"}))
    before = files(run.path)
    with pytest.raises(ResultsError, match=r"trained on cuda and its checkpoint holds cuda random streams"):
        run_one(SWEEP, spec(0, budget=20000), results, data_root)
    assert files(run.path) == before


def test_a_run_stopped_before_its_first_status_is_placed_by_its_checkpoint(results, data_root, monkeypatch):
    """Killed after its first checkpoint, before its first status: the checkpoint names the device its streams
    belong to, and a machine of another kind (here one that would train on CUDA) refuses it the same way."""
    run = folder(results, 0)
    assert not run.status_file.is_file() and run.checkpoint_axis()["device"] == "cpu"
    monkeypatch.setattr("vae.runs.train.device_type", lambda cfg: "cuda")
    before = files(run.path)
    with pytest.raises(ResultsError, match=r"trained on cpu and its checkpoint holds cpu random streams: it continues"):
        resume(results, data_root)
    assert files(run.path) == before
