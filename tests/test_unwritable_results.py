"""The result writers (`tables`, `figures`, `log-px`) on a results folder they cannot write: one line, exit
status 2, no traceback, nothing changed, and log-px refuses before its importance sampling. Root writes through
file modes, so the folder is made read-only by a read-only bind mount (the test is skipped where mounting is not
allowed); a full disk is a small tmpfs filled up."""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.test_train import TINY
from vae.__main__ import main
from vae.config import RunSpec, make_config
from vae.models.vae import VAE
from vae.runs.train import run_one

RUN = Path("runs/test/run")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root) -> Path:
    results = tmp_path_factory.mktemp("unwritable") / "results"
    run_one("test", RunSpec(name="run", config=make_config({**TINY, "lr": 0.02})), results, data_root)
    return results


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def read_only(trained, tmp_path) -> Iterator[Path]:
    """A copy of the trained results folder, seen read-only at the returned path."""
    shutil.copytree(trained, tmp_path / "rw")
    view = tmp_path / "ro"
    view.mkdir()
    try:
        mount("--bind", str(tmp_path / "rw"), str(view))
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("bind mounts are not allowed here")
    try:
        mount("-o", "remount,ro,bind", str(view))
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


@pytest.fixture
def full(trained, tmp_path) -> Iterator[Path]:
    """A copy of the trained results folder on a tmpfs with no space left."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk))
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("tmpfs mounts are not allowed here")
    try:
        shutil.copytree(trained, disk / "results")
        with open(disk / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        yield disk / "results"
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (an empty output folder made on a full disk is no change to them)."""
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def commands(results: Path, tmp_path: Path, data_root: Path) -> dict[str, list[str]]:
    settings = tmp_path / "figures.yaml"
    settings.write_text(yaml.safe_dump({"seed": 0, "figure4": {}, "figure5": [str(results / RUN)]}))
    none = str(tmp_path / "no-reference")
    return {
        "tables": ["tables", "--results-dir", str(results), "--reference", none],
        "figures": [
            "figures",
            "--results-dir",
            str(results),
            "--reference",
            none,
            "--no-wandb",
            "--settings",
            str(settings),
        ],
        "log-px": ["log-px", str(results / RUN), "--data-dir", str(data_root), "--k", "10", "--points", "50"],
    }


def refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and 1 <= len(lines) <= 2 and lines[-1].startswith("error: cannot write"), err
    return lines[-1]


@pytest.mark.parametrize("command", ["tables", "figures", "log-px"])
def test_a_read_only_results_folder_is_refused_in_one_line(
    command, read_only, tmp_path, data_root, capsys, monkeypatch
):
    def sampled(*args, **kwargs):
        raise AssertionError("log-px sampled before finding its folder read-only")

    monkeypatch.setattr(VAE, "log_marginal", sampled)
    before = snapshot(read_only)
    line = refused(commands(read_only, tmp_path, data_root)[command], capsys)
    assert os.strerror(30) in line, line  # EROFS
    assert snapshot(read_only) == before


@pytest.mark.parametrize("command", ["tables", "figures", "log-px"])
def test_a_full_disk_is_refused_in_one_line(command, full, tmp_path, data_root, capsys):
    before = snapshot(full)
    line = refused(commands(full, tmp_path, data_root)[command], capsys)
    assert os.strerror(28) in line, line  # ENOSPC
    assert snapshot(full) == before
