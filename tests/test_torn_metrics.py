"""The checkpoint is the truth and metrics.csv its copy: a torn or edited CSV is rewritten from the checkpoint's
history when training resumes or extends the run, and `tables` never reports it as if whole."""

import io
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.test_train import TINY
from vae.__main__ import main
from vae.config import RunSpec, make_config
from vae.runs.checkpoint import read_checkpoint
from vae.runs.folder import RunFolder
from vae.runs.train import run_one

CONFIG = {**TINY, "lr": 0.02, "running_every": 3000}  # running-average rows leave the test columns empty
REPAIRED = "metrics.csv did not match its checkpoint"


def train(results: Path, data_root: Path, name: str, **overrides) -> dict:
    return run_one("test", RunSpec(name=name, config=make_config({**CONFIG, **overrides})), results, data_root)


def lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def edited(data: bytes) -> bytes:
    frame = pd.read_csv(io.BytesIO(data))
    frame.loc[3, "test/elbo"] += 0.5
    return frame.to_csv(index=False).encode()


DAMAGE = {
    "truncated to half its bytes": lambda data: data[: len(data) // 2],
    "a row dropped": lambda data: b"".join(lines(data)[:3] + lines(data)[4:]),
    "a value edited": edited,
    "a garbage line": lambda data: b"".join(lines(data)[:3] + [b"\xff\xfe garbage\n"] + lines(data)[3:]),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root) -> Path:
    """Two finished runs of one curve (seeds 0 and 1) and, beside them, the first extended untouched."""
    results = tmp_path_factory.mktemp("torn") / "results"
    train(results, data_root, "run")
    train(results, data_root, "other", seed=1)
    shutil.copytree(results, results.parent / "extended")
    train(results.parent / "extended", data_root, "run", budget=30000)
    return results


def damaged(trained: Path, tmp_path: Path, damage: str) -> RunFolder:
    shutil.copytree(trained, tmp_path / "results")
    folder = RunFolder.of(tmp_path / "results", "test", "run")
    folder.metrics_file.write_bytes(DAMAGE[damage](folder.metrics_file.read_bytes()))
    return folder


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_extending_the_run_rewrites_the_csv_from_the_checkpoint(damage, trained, tmp_path, data_root, capsys):
    folder = damaged(trained, tmp_path, damage)
    train(tmp_path / "results", data_root, "run", budget=30000)
    out = capsys.readouterr().out
    assert out.count(REPAIRED) == 1 and "rewritten from the checkpoint's history" in out, out
    clean = pd.read_csv(trained.parent / "extended" / "runs" / "test" / "run" / "metrics.csv")
    repaired = pd.read_csv(folder.metrics_file)
    assert repaired["samples"].tolist() == clean["samples"].tolist()
    kept = clean["samples"] <= 20000  # the points of the first session are the same file's; later times differ
    pd.testing.assert_frame_equal(repaired[kept], clean[kept])
    cols = ["samples", "train/elbo", "test/elbo", "train/running_elbo", "lr"]
    pd.testing.assert_frame_equal(repaired[cols], clean[cols])


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_rerunning_a_finished_run_restores_its_csv_byte_for_byte(damage, trained, tmp_path, data_root, capsys):
    folder = damaged(trained, tmp_path, damage)
    train(tmp_path / "results", data_root, "run")
    out = capsys.readouterr().out
    assert out.count(REPAIRED) == 1 and "nothing to do" in out, out
    assert folder.metrics_file.read_bytes() == (trained / "runs" / "test" / "run" / "metrics.csv").read_bytes()
    train(tmp_path / "results", data_root, "run")
    assert REPAIRED not in capsys.readouterr().out


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_tables_skip_a_torn_csv_with_a_warning(damage, trained, tmp_path, capsys):
    folder = damaged(trained, tmp_path, damage)
    before = folder.metrics_file.read_bytes()
    results = tmp_path / "results"
    assert main(["tables", "--results-dir", str(results), "--reference", str(tmp_path / "none")]) == 0
    err = capsys.readouterr().err
    (warning,) = [line for line in err.splitlines() if "skipped" in line]
    assert str(folder.metrics_file) in warning and "rewrites it from the run's checkpoint" in warning, warning
    used = (results / "tables" / "fig2_runs_used.csv").read_text()
    assert "test/other" in used and "test/run" not in used, used
    assert folder.metrics_file.read_bytes() == before


def test_without_a_checkpoint_tables_say_there_is_none_to_repair_from(trained, tmp_path, capsys):
    folder = damaged(trained, tmp_path, "truncated to half its bytes")
    shutil.rmtree(folder.checkpoint.parent)
    main(["tables", "--results-dir", str(tmp_path / "results"), "--reference", str(tmp_path / "none")])
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert "last evaluation of status.json" in warning and "no checkpoint to rewrite it from" in warning, warning


def test_rows_beyond_the_checkpoint_are_not_a_departure(trained):
    """A kill after a point was logged and before the next checkpoint leaves rows beyond it, logged again alike
    on resume."""
    folder = RunFolder.of(trained, "test", "run")
    history = read_checkpoint(folder)["sample_axis"]["history"]
    assert folder.metrics_departure(history, history[-1]["samples"]) is None
    assert folder.metrics_departure(history[:-2], history[-3]["samples"]) is None
    assert "rows" in folder.metrics_departure(history[:-1], history[-1]["samples"])
