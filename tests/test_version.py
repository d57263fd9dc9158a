"""The package's version: ``python -m vae --version``, ``vae.__version__`` and the ``vae`` console script."""

import subprocess
import sys
from pathlib import Path

import pytest

import vae

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_flag_prints_the_version_and_exits_0():
    out = subprocess.run(
        [sys.executable, "-m", "vae", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"vae {vae.__version__}"


def test_the_version_is_the_distributions():
    assert vae.__version__ == PYPROJECT["project"]["version"]


def test_pyproject_declares_the_console_script_and_ships_py_typed():
    assert PYPROJECT["project"]["scripts"]["vae"] == "vae.__main__:console"
    from vae.__main__ import console  # the entry point exists

    assert callable(console)
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["vae"]
    assert (ROOT / "vae" / "py.typed").is_file()
