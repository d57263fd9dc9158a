"""Bad input of every kind a user can give stops with one or two lines that say what to do, exit status 2, no
traceback, and nothing created or changed: not the results folder, not the data folder, not the experiment."""

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from vae.__main__ import main

BASE = dict(
    hidden=20,
    n_train=1000,
    budget=4000,
    eval_start=1000,
    lr_select_samples=1000,
    adagrad_warmup=2,
    eval_batch=5000,
    wandb="offline",
    checkpoint_minutes=10.0,
)
SWEEP = {"name": "s", "base": BASE, "grid": {"nz": [2, 3]}}
RUN = Path("runs/s/nz2-seed0")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root) -> Path:
    """A results folder with two finished runs (Nz = 2 and 3), checkpoints and offline W&B runs."""
    tmp = tmp_path_factory.mktemp("trained")
    (tmp / "s.yaml").write_text(yaml.safe_dump(SWEEP))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "vae",
            "train",
            str(tmp / "s.yaml"),
            "--results-dir",
            str(tmp / "results"),
            "--data-dir",
            str(data_root),
        ],
        check=True,
        capture_output=True,
    )
    return tmp / "results"


class Case:
    """A copy of the trained results folder, the sweep file, and the paths a case mutates."""

    def __init__(self, tmp: Path, data_root: Path) -> None:
        self.tmp, self.data = tmp, data_root
        self.results, self.sweep, self.none = tmp / "results", tmp / "s.yaml", tmp / "no-reference"
        self.run = self.results / RUN

    def train(self, *overrides: str, experiment: Path | None = None, data: Path | None = None) -> list[str]:
        return [
            "train",
            str(experiment or self.sweep),
            "--results-dir",
            str(self.results),
            "--data-dir",
            str(data or self.data),
        ] + (["--set", *overrides] if overrides else [])

    def alone(self) -> None:
        """Leave the damaged run alone in the results folder (with others beside it, it is skipped)."""
        shutil.rmtree(self.results / "runs" / "s" / "nz3-seed0")

    def tables(self) -> list[str]:
        self.alone()
        return ["tables", "--results-dir", str(self.results), "--reference", str(self.none)]

    def figures(self, settings: dict | None = None) -> list[str]:
        path = self.tmp / "figures.yaml"
        path.write_text(yaml.safe_dump(settings or {"seed": 0, "figure4": {}, "figure5": [str(RUN)]}))
        if settings is None:
            self.alone()
        return [
            "figures",
            "--results-dir",
            str(self.results),
            "--reference",
            str(self.none),
            "--no-wandb",
            "--settings",
            str(path),
        ]

    def diagnose(self) -> list[str]:
        return ["diagnose", str(self.run), "--data-dir", str(self.data), "--points", "100"]

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def garbage_metrics(self) -> None:
        (self.run / "metrics.csv").write_bytes(b'\x00\xff\x13 not,a\ncsv""\x00' * 50)

    def half_status(self) -> None:
        (self.run / "status.json").write_text('{"samples": 40')

    def truncated_checkpoint(self) -> None:
        ckpt = self.run / "checkpoints" / "last.ckpt"
        ckpt.write_bytes(ckpt.read_bytes()[:5000])

    def other_nz_checkpoint(self) -> None:
        other = self.results / "runs" / "s" / "nz3-seed0" / "checkpoints"
        for name in ("last.ckpt", "last.ckpt.sha256"):
            shutil.copy(other / name, self.run / "checkpoints" / name)

    def data_file_is_directory(self) -> Path:
        data = self.tmp / "data"
        shutil.copytree(
            self.data,
            data,
            symlinks=False,
            ignore=lambda d, names: [n for n in names if "fashion" in n],
            copy_function=os.symlink,
        )
        images = data / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
        images.unlink()
        images.mkdir()
        return data

    def symlink_loop(self) -> Path:
        loop = self.tmp / "loop"
        loop.symlink_to(loop)
        return loop


CASES: dict[str, Callable[[Case], list[str]]] = {
    "budget=1e400": lambda c: c.train("budget=1e400"),
    "budget=1e30": lambda c: c.train("budget=1e30"),
    "--seeds 100000000": lambda c: c.train() + ["--seeds", "100000000"],
    "a running average every 100 samples to 1e9": lambda c: c.train("budget=1e9", "running_every=100"),
    "an evaluation every minibatch to 1e9": lambda c: c.train("budget=1e9", "eval_spacing=linear", "eval_every=100"),
    "a 131,000-character --set value": lambda c: c.train("nz=" + "x" * 131_000),
    "lr=nan": lambda c: c.train("lr=nan"),
    "lr=.inf": lambda c: c.train("lr=.inf"),
    "lr=inf": lambda c: c.train("lr=inf"),
    "M above the training set without replacement": lambda c: c.train("M=2000", "replacement=false"),
    "seed=1e20": lambda c: c.train("seed=1e20"),
    "nz=1e12": lambda c: c.train("nz=1e12"),
    "accelerator=gpu without a GPU": lambda c: c.train("accelerator=gpu"),
    "YAML syntax error in the file": lambda c: c.train(experiment=c.write("bad.yaml", "name: s\nbase: {nz: [1,\n")),
    "YAML syntax error in --set": lambda c: c.train("lr_candidates=[0.1,"),
    "base given as a list": lambda c: c.train(experiment=c.write("bad.yaml", "name: s\nbase: [1, 2]\n")),
    "a grid value that is a scalar": lambda c: c.train(
        experiment=c.write("bad.yaml", yaml.safe_dump({"name": "s", "base": BASE, "grid": {"nz": 5}}))
    ),
    "a binary file as the experiment": lambda c: c.train(experiment=c.write("bad.yaml", bytes(range(256)) * 4)),
    "a directory as the experiment": lambda c: c.train(experiment=c.tmp),
    "a missing experiment": lambda c: c.train(experiment=c.tmp / "nope.yaml"),
    "garbage metrics.csv: tables": lambda c: (c.garbage_metrics(), c.tables())[1],
    "garbage metrics.csv: figures": lambda c: (c.garbage_metrics(), c.figures())[1],
    "half-written status.json: train": lambda c: (c.half_status(), c.train("budget=8000"))[1],
    "half-written status.json: tables": lambda c: (c.half_status(), c.tables())[1],
    "half-written status.json: figures": lambda c: (c.half_status(), c.figures())[1],
    "truncated checkpoint: train": lambda c: (c.truncated_checkpoint(), c.train("budget=8000"))[1],
    "truncated checkpoint: diagnose": lambda c: (c.truncated_checkpoint(), c.diagnose())[1],
    "truncated checkpoint: figures": lambda c: (c.truncated_checkpoint(), c.figures())[1],
    "checkpoint of another nz: train": lambda c: (c.other_nz_checkpoint(), c.train("budget=8000"))[1],
    "checkpoint of another nz: diagnose": lambda c: (c.other_nz_checkpoint(), c.diagnose())[1],
    "checkpoint of another nz: figures": lambda c: (c.other_nz_checkpoint(), c.figures())[1],
    "diagnose a folder that is not a run": lambda c: ["diagnose", str(c.tmp / "nope"), "--data-dir", str(c.data)],
    "log-px of a folder that is not a run": lambda c: ["log-px", str(c.tmp / "nope"), "--data-dir", str(c.data)],
    "a symlink loop as the data folder": lambda c: c.train("budget=8000", data=c.symlink_loop()),
    "a data file that is a directory": lambda c: c.train("budget=8000", data=c.data_file_is_directory()),
    "a mistyped data folder": lambda c: c.train("budget=8000", data=c.tmp / "typo" / "data"),
    "figures with a missing settings file": lambda c: c.figures()[:-1] + [str(c.tmp / "nope.yaml")],
    "Figure 4 of a run whose Nz is not 2": lambda c: c.figures(
        {"seed": 0, "figure4": {"mnist": {"run": "runs/s/nz3-seed0", "grid": 5}}, "figure5": []}
    ),
    "a step-size selection inside the Adagrad warm-up": lambda c: c.train("budget=8000", "adagrad_warmup=100"),
}


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes] | None]:
    """Every entry under ``root``: each file's inode, modification time and content; folders by name only. A run's
    ``lock`` file counts by name too: refusing a run under its lock records the refusing process there."""
    out: dict[str, tuple[int, int, bytes] | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        out |= {str(Path(dirpath) / name): None for name in dirnames}
        for name in filenames:
            p = Path(dirpath) / name
            s = p.lstat()
            plain = p.is_file() and not p.is_symlink() and name != "lock"
            out[str(p)] = (s.st_ino, s.st_mtime_ns, p.read_bytes()) if plain else None
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_stops_with_a_message_and_changes_nothing(name, trained, tmp_path, data_root, capsys):
    shutil.copytree(trained, tmp_path / "results", symlinks=True)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SWEEP))
    argv = CASES[name](Case(tmp_path, data_root))
    before = snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and 1 <= len(lines) <= 2 and lines[-1].startswith("error: "), err
    assert snapshot(tmp_path) == before


def test_one_unreadable_run_is_skipped_with_a_warning_and_the_others_are_tabulated(trained, tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(trained, results, symlinks=True)
    (results / RUN / "metrics.csv").write_bytes(b"\x00\xff garbage")
    assert main(["tables", "--results-dir", str(results), "--reference", str(tmp_path / "none")]) == 0
    err = capsys.readouterr().err
    assert f"{results / RUN / 'metrics.csv'} cannot be read" in err and "skipped" in err
    used = (results / "tables" / "fig2_runs_used.csv").read_text()
    assert "nz3-seed0" in used and "nz2-seed0" not in used


@pytest.mark.parametrize(
    "args, sweep, bound",
    [
        (["--set", "budget=1e30"], {}, "(0, 1000000000000]"),
        (["--seeds", "100000000"], {}, "at most 1,000 seeds"),
        ([], {"seeds": 100000000}, "at most 1,000 seeds"),
        ([], {"seeds": 1000, "grid": {"nz": [3, 5, 10, 20, 200], "lr": [0.01, 0.02, 0.1]}}, "at most 10,000"),
    ],
    ids=["samples", "seeds", "seeds-in-the-file", "grid-times-seeds"],
)
def test_a_budget_or_seed_count_beyond_its_bound_is_refused_at_once_and_creates_nothing(
    args, sweep, bound, tmp_path, data_root
):
    """Refused while the sweep is read, before torch loads: nothing is expanded, built or written. (On a quiet
    machine the command takes a tenth of a second; the time allows for a loaded one.)"""
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SWEEP | sweep))
    cli = (
        "import sys; from vae.__main__ import main; status = main(sys.argv[1:]); print(sorted(sys.modules)); "
        "sys.exit(status)"
    )
    start = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            cli,
            "train",
            str(tmp_path / "s.yaml"),
            "--results-dir",
            str(tmp_path / "results"),
            "--data-dir",
            str(data_root),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - start < 10
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "'torch'" not in done.stdout and "'lightning'" not in done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and bound in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_an_echoed_value_is_cut_to_a_readable_length(tmp_path, capsys):
    """The error line keeps the key at its start and the end of the value; the 131,000 characters between go,
    from the config's messages and from argparse's alike."""
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SWEEP))
    assert (
        main(["train", str(tmp_path / "s.yaml"), "--results-dir", str(tmp_path / "r"), "--set", "nz=" + "x" * 131_000])
        == 2
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: nz must be a number, got 'xxx") and line.endswith("xxx'") and " … " in line
    assert len(line) <= 203
    with pytest.raises(SystemExit) as stop:
        main(["train", str(tmp_path / "s.yaml"), "--seeds", "9" * 131_000])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("python -m vae train: error: argument --seeds: invalid int value: '999") and len(last) < 240
