"""The command line a newcomer meets first: ``--help`` at once, with every option explained and its default; a
mistyped command, option value, config key or sweep name answered in one line with the nearest right one (exit
status 2); the sweeps of experiments/ named without their path, from any folder, installed or not."""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import vae.sweeps
from vae.__main__ import command_line
from vae.config import ConfigError, load_sweep
from vae.sweeps import find

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "lightning", "wandb", "pandas", "ray")


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m vae ARGS`` in ``cwd``, importing this checkout's package."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "vae", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def refused(done: subprocess.CompletedProcess) -> str:
    """The one line a refused command says (exit status 2, nothing on stdout, no traceback)."""
    assert done.returncode == 2 and not done.stdout and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    return line


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"]])
def test_help_comes_within_two_seconds_without_loading_torch(args):
    """The parser is built and printed before torch, Lightning, W&B, pandas or Ray load. (Best of two: a first
    start of the interpreter may wait on a cold disk.)"""
    code = (
        f"import sys; from vae.__main__ import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in {!r} if m in sys.modules))".format(HEAVY)
    )
    took = []
    for _ in range(2):
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
        )
        took.append(time.monotonic() - start)
    assert "usage: python -m vae" in done.stdout and "LOADED []" in done.stdout, done.stdout + done.stderr
    assert min(took) < 2.0, took


def test_every_option_has_help_and_the_help_shows_its_default():
    parser = command_line()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, command in commands.items():
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    train = commands["train"].format_help()
    for default in ("(default: results)", "(default: local)", "(default: reference)", "(default: 1.0)"):
        assert default in " ".join(train.split()), default
    assert "(default: None)" not in train and "(default: False)" not in train and "(default: [])" not in train
    assert "(default: tables)" in " ".join(commands["tables"].format_help().split())
    assert "fig2_mnist_aevb" in train  # the sweeps that can be named


@pytest.mark.parametrize(
    "args, hint",
    [
        (["trian"], "did you mean 'train'?"),
        (["train", "smoke", "--engine", "lcoal"], "did you mean 'local'?"),
        (["train", "smoke", "--set", "nzz=3"], "--set: unknown config key 'nzz' (did you mean 'nz'?)"),
        (["train", "fig2_mnist_avb"], "did you mean 'fig2_mnist_aevb'?"),
        (["tables", "--settings", "tabels"], "did you mean 'tables'?"),
    ],
    ids=["command", "option value", "config key", "sweep name", "settings name"],
)
def test_a_mistyped_name_is_answered_in_one_line_with_the_nearest_one(args, hint, tmp_path):
    line = refused(cli(*args, "--results-dir", str(tmp_path / "results")))
    assert hint in line, line
    assert not (tmp_path / "results").exists()


def test_a_mistyped_key_in_a_sweep_file_is_answered_in_one_line_with_the_file(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "base": {"nz": 2}, "grid": {"lrr": [0.01, 0.1]}}))
    line = refused(cli("train", str(sweep), "--results-dir", str(tmp_path / "results")))
    assert line == f"error: {sweep} grid: unknown config key 'lrr' (did you mean 'lr'?)"


def test_an_unknown_sweep_name_far_from_any_points_to_the_list():
    line = refused(cli("train", "zzzz"))
    assert "'zzzz' is neither a file nor the name of a sweep file" in line and "--help lists the sweeps" in line


@pytest.mark.parametrize("name", ["fig2_mnist_aevb", "fig2_mnist_aevb.yaml", "fig2-mnist-aevb"])
def test_a_sweep_is_named_by_its_file_name_or_its_name_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no experiments/ here
    path = find(name)
    assert path == ROOT / "experiments" / "fig2_mnist_aevb.yaml"
    assert load_sweep(path).name == "fig2-mnist-aevb"


def test_the_command_line_trains_a_named_sweep_from_another_folder(tmp_path):
    """Named from a folder without experiments/: the sweep is read (and here refused for its budget, before
    anything is written), not reported missing."""
    line = refused(cli("train", "fig2-mnist-aevb", "--set", "budget=1e30", cwd=tmp_path))
    assert line.startswith("error: budget=") and "must lie in (0, 1000000000000]" in line, line
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_or_a_path_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").write_text("name: mine\nbase: {}\n")
    assert find("smoke") == Path("smoke")
    assert find("elsewhere/smoke.yaml") == Path("elsewhere/smoke.yaml")  # its reader says it is missing


def test_an_installed_copy_is_used_where_there_is_one(tmp_path, monkeypatch):
    """A wheel installs experiments/ as vae/experiments/ (tests/test_packaging.py); names resolve there."""
    installed = tmp_path / "vae" / "experiments"
    installed.mkdir(parents=True)
    (installed / "fig2_mnist_aevb.yaml").write_text("name: fig2-mnist-aevb\nbase: {}\n")
    monkeypatch.setattr(vae.sweeps, "INSTALLED", installed)
    assert find("fig2-mnist-aevb") == installed / "fig2_mnist_aevb.yaml"
    with pytest.raises(ConfigError, match=f"{installed}; did you mean 'fig2_mnist_aevb'"):
        find("fig2_mnist_avb")
