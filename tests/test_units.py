"""The reference on the paper's axis, unit by unit: staged from the reference's checkpoints, trained with the
stack engine up to a deadline (SIGTERM: checkpointed), packed into tars and adopted into the reference, where
the next unit run continues it. On the CPU, on a tiny sweep; ``make gpu-reference`` runs the same commands."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from helpers import fake_run

from vae.runs.folder import RunFolder
from vae.runs.units import Part, load_units, main, stage

TINY = dict(
    dataset="mnist",
    n_train=1000,
    hidden=20,
    lr=0.02,
    adagrad_warmup=5,
    eval_start=2000,
    eval_per_decade=2,
    eval_batch=5000,
    running_every=None,
    budget=4000,
    checkpoint_minutes=10,
)


def units(tmp_path: Path, samples: int) -> Path:
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(yaml.safe_dump({"name": "tiny", "base": TINY, "grid": {"nz": [2, 4]}}))
    path = tmp_path / "units.yaml"
    path.write_text(yaml.safe_dump({"u": [{"sweep": "tiny.yaml", "budget": samples}]}))
    return path


def places(tmp_path: Path) -> list[str]:
    """The units file and the folders of a unit's commands, under ``tmp_path``."""
    folders = [("--units", "units.yaml"), ("--staging", "staging"), ("--reference", "reference"), ("--out", "out")]
    return [arg for option, name in folders for arg in (option, str(tmp_path / name))]


def units_cmd(tmp_path: Path, data_root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vae.runs.units", *args, *places(tmp_path)]
    env = os.environ | {"VAE_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def slot(tmp_path: Path, data_root: Path, seconds: float, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """One GPU slot's commands, here: stage, train until ``seconds``, pack; the staging folder is gone after,
    as on a fresh machine. They run through the module's ``main`` in this process (its ``train`` starts the real
    ``python -m vae train``); ``test_adopt_refuses_a_tar_that_is_not_a_unit`` runs the module as a command."""
    monkeypatch.setenv("VAE_DATA_DIR", str(data_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for args in (["stage", "u"], ["train", "u", "--seconds", str(seconds), "--set", "accelerator=cpu"], ["pack", "u"]):
        assert main([*args, *places(tmp_path)]) == 0
    tars = sorted((tmp_path / "out").glob("*.tar"))
    moved = [tmp_path / f"slot-{t.name}" for t in tars]
    for t, m in zip(tars, moved, strict=True):
        t.rename(m)
    subprocess.run(["rm", "-rf", str(tmp_path / "staging")], check=True)
    return moved


def test_a_unit_continues_from_the_adopted_reference(tmp_path, data_root, monkeypatch, capsys):
    units(tmp_path, 4000)
    tars = slot(tmp_path, data_root, 300, monkeypatch)
    names = set()
    for t in tars:
        with tarfile.open(t) as tar:
            names.update(tar.getnames())
    assert "runs/tiny/nz2-seed0/checkpoints/last.ckpt" in names and "runs/tiny/nz4-seed0/metrics.csv" in names
    capsys.readouterr()
    assert main(["adopt", *map(str, tars), *places(tmp_path)]) == 0
    assert "adopted tiny/nz2-seed0" in capsys.readouterr().out
    first = RunFolder.of(tmp_path / "reference", "tiny", "nz2-seed0")
    assert first.status()["samples"] == 4000 and first.has_checkpoint()
    rows = len(first.metrics())
    assert list(first.metrics()["samples"]) == [2000, 4000]

    units(tmp_path, 8000)  # the next slot extends the adopted runs
    tars = slot(tmp_path, data_root, 300, monkeypatch)
    capsys.readouterr()
    assert main(["stage", "u", *places(tmp_path)]) == 0
    assert "staged 2 runs" in capsys.readouterr().out
    assert main(["adopt", *map(str, tars), *places(tmp_path)]) == 0
    again = RunFolder.of(tmp_path / "reference", "tiny", "nz2-seed0")
    assert again.status()["samples"] == 8000 and len(again.metrics()) > rows


@pytest.mark.slow  # a minute: the deadline has to leave the run time to start under load
def test_the_deadline_stops_a_unit_checkpointed(tmp_path, data_root, monkeypatch):
    units(tmp_path, 10**10)  # far beyond what the deadline lets it reach
    tars = slot(tmp_path, data_root, 60, monkeypatch)
    assert main(["adopt", *map(str, tars), *places(tmp_path)]) == 0
    run = RunFolder.of(tmp_path / "reference", "tiny", "nz2-seed0")
    assert run.has_checkpoint() and 0 < run.status()["samples"] < 10**7


def test_adopt_refuses_a_tar_that_is_not_a_unit(tmp_path, data_root):
    bad = tmp_path / "bad.tar"
    (tmp_path / "x").write_text("x")
    with tarfile.open(bad, "w") as t:
        t.add(tmp_path / "x", arcname="../x")
    done = units_cmd(tmp_path, data_root, "adopt", str(bad))
    assert done.returncode == 2 and done.stderr.startswith("error: ") and not (tmp_path / "reference").exists()


def test_every_committed_checkpoint_a_unit_stages_continues_on_the_gpu():
    """The GPU machine continues the reference runs of a unit that have a checkpoint; a run with a checkpoint
    trained on the CPU (its random streams, refused on CUDA) must not be part of a unit, or a slot would meet that
    refusal."""
    repo = Path(__file__).resolve().parents[1]
    staged = 0
    for name, parts in load_units(repo / "experiments" / "reference_units.yaml").items():
        for part in parts:
            for sweep, run in part.runs():
                folder = RunFolder(repo / "reference" / "runs" / sweep / run)
                if folder.has_checkpoint():
                    staged += 1
                    device = folder.status()["device"]
                    assert device.startswith("cuda"), f"unit {name} stages {sweep}/{run}, trained on {device}"
    assert staged  # the committed GPU runs of the MNIST AEVB unit


def test_a_run_finished_without_a_checkpoint_is_staged_to_be_left_as_it_is(tmp_path):
    """A reference run trained to the unit's budget elsewhere (no checkpoint committed) is staged, so the unit
    finds it finished instead of training it again from zero; one short of the budget is not."""
    parts = [Part(tmp_path / "tiny.yaml", 4000)]
    units(tmp_path, 4000)
    reference = tmp_path / "reference"
    done = fake_run(reference, "tiny", "nz2-seed0", [(2000, -1.0, -1.0), (4000, -1.0, -1.0)], eval_start=2000, lr=0.02)
    short = fake_run(reference, "tiny", "nz4-seed0", [(2000, -1.0, -1.0)], eval_start=2000, lr=0.02)
    for folder, budget in ((done, 4000), (short, 4000)):
        status = json.loads((folder / "status.json").read_text())
        (folder / "status.json").write_text(json.dumps(status | {"budget": budget}))
    assert stage(parts, reference, tmp_path / "staging") == ["tiny/nz2-seed0"]
    assert (tmp_path / "staging" / "runs" / "tiny" / "nz2-seed0" / "metrics.csv").is_file()
