"""wandb and ray are optional (``vae.optional``): a GPU machine that brings only torch and Lightning trains with
``wandb=disabled`` on the local and stack engines, and makes tables and figures, without importing either; a
command that asks for one that is missing says so in one line, exit status 2, before anything is written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import yaml
from helpers import SMOKE, fake_run, train_args

from vae.__main__ import main
from vae.config import load_sweep
from vae.optional import MissingDependency
from vae.results.figures import log_to_wandb
from vae.results.wandb_paper import log_paper_curves
from vae.runs.folder import RunFolder

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = ("wandb", "ray")

# On PYTHONPATH as sitecustomize, so in every Python process of a command: wandb and ray cannot be imported, as
# if not installed, and every attempt to import them (even one a library catches) is written to the log.
BLOCKER = f"""
import os, sys

class Unimportable:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {OPTIONAL!r}:
            with open(os.environ["VAE_TEST_IMPORT_LOG"], "a") as log:
                log.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Unimportable())
"""


def blocked(tmp: Path) -> tuple[dict[str, str], Path]:
    """The environment of a process where wandb and ray are unimportable, and the log of attempts to import them."""
    site = tmp / "blocker"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    log = tmp / "imports.log"
    path = os.pathsep.join(p for p in (str(site), str(REPO), os.environ.get("PYTHONPATH")) if p)
    return os.environ | {"PYTHONPATH": path, "VAE_TEST_IMPORT_LOG": str(log)}, log


def attempts(log: Path) -> list[str]:
    return log.read_text().split() if log.is_file() else []


# The commands one after another in one process (each a fresh `python -m vae` would import torch and Lightning
# again): each one's exit status and the import attempts logged by then, as JSON into argv[1].
DRIVER = """
import json, os, sys
from vae.__main__ import main
log, done = os.environ["VAE_TEST_IMPORT_LOG"], []
for args in json.loads(sys.argv[2]):
    status = main(args)
    tried = open(log).read().split() if os.path.exists(log) else []
    done.append([args[0], status, tried])
    if status or tried:
        break
open(sys.argv[1], "w").write(json.dumps(done))
"""


def test_train_tables_and_figures_never_import_wandb_or_ray(tmp_path, data_root):
    env, log = blocked(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import wandb"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1 and "No module named 'wandb'" in probe.stderr  # the blocker works
    assert attempts(log) == ["wandb"]
    log.unlink()

    sweep, results, none = tmp_path / "smoke.yaml", tmp_path / "results", tmp_path / "no-reference"
    sweep.write_text(yaml.safe_dump(SMOKE))
    settings = tmp_path / "figures.yaml"
    settings.write_text(yaml.safe_dump({"seed": 0, "figure4": {}, "figure5": ["runs/smoke/nz3-seed0"]}))
    commands = [
        ["train", str(sweep), "--results-dir", str(results), "--data-dir", str(data_root), "--set", "wandb=disabled"],
        ["tables", "--results-dir", str(results), "--reference", str(none)],
        ["figures", "--results-dir", str(results), "--reference", str(none), "--settings", str(settings), "--no-wandb"],
    ]
    report = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-c", DRIVER, str(report), json.dumps(commands)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and "Traceback" not in run.stderr, f"{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    done = json.loads(report.read_text())
    assert done == [["train", 0, []], ["tables", 0, []], ["figures", 0, []]], f"{done}\n{run.stderr[-3000:]}"
    assert len(RunFolder.all(results)) == 2 and not list(results.glob("runs/smoke/*/wandb*"))
    assert (results / "tables" / "fig2.md").is_file()
    assert {p.name for p in (results / "figures").iterdir()} >= {"fig2.png", "fig5_mnist_nz3.png"}


@pytest.fixture
def unimportable(monkeypatch):
    """wandb and ray unimportable in this process (a None in sys.modules makes ``import`` raise ImportError)."""
    for name in OPTIONAL:
        monkeypatch.setitem(sys.modules, name, None)


def test_the_stack_engine_trains_without_wandb_or_ray(tmp_path, data_root, unimportable):
    """The GPU machine's command (make gpu-check): the stack engine, wandb=disabled (here one evaluation point,
    no step-size selection)."""
    sweep, results = tmp_path / "smoke.yaml", tmp_path / "results"
    sweep.write_text(yaml.safe_dump(SMOKE))
    assert (
        main(
            [
                *train_args(sweep, results, data_root),
                "--engine",
                "stack",
                "--set",
                "wandb=disabled",
                "lr=0.1",
                "budget=1000",
            ]
        )
        == 0
    )
    assert [RunFolder(p).status()["samples"] for p in sorted(results.glob("runs/smoke/*"))] == [1000, 1000]


@pytest.mark.parametrize(
    "asked, words",
    [
        (["--set", "wandb=offline"], ["wandb", "wandb=disabled"]),
        (["--set", "wandb=online"], ["wandb", "wandb=disabled"]),
        (["--engine", "ray", "--set", "wandb=disabled"], ["ray", "--engine local"]),
    ],
)
def test_asking_for_a_missing_optional_package_is_one_line(tmp_path, data_root, capsys, unimportable, asked, words):
    sweep, results = tmp_path / "smoke.yaml", tmp_path / "results"
    sweep.write_text(yaml.safe_dump(SMOKE))
    assert main(["train", str(sweep), "--results-dir", str(results), "--data-dir", str(data_root), *asked]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert all(w in err for w in words), err
    assert not results.exists()  # refused before anything was written


def test_wandb_is_imported_only_for_runs_logged_to_it(tmp_path, unimportable):
    image = tmp_path / "img.png"
    plt.imsave(image, np.zeros((4, 4)))
    off = fake_run(tmp_path, "f", "off", [(100000, -170, -169)], wandb="disabled")
    assert log_to_wandb([off], {"fig2": image}) == 0
    on = fake_run(tmp_path, "f", "on", [(100000, -170, -169)], wandb="offline")
    RunFolder(on).wandb_id()
    with pytest.raises(MissingDependency, match="--no-wandb"):
        log_to_wandb([off, on], {"fig2": image})

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": {"wandb": "disabled"}, "grid": {"nz": [3, 20]}}))
    assert log_paper_curves(load_sweep(path), tmp_path) == []
    path.write_text(yaml.safe_dump({"name": "s", "base": {"wandb": "offline"}, "grid": {"nz": [3, 20]}}))
    with pytest.raises(MissingDependency, match="wandb=disabled"):
        log_paper_curves(load_sweep(path), tmp_path)
