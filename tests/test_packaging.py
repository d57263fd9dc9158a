"""What ``pip install .`` installs: every package folder of vae/, and the repository's experiments/ as
vae/experiments/, where ``vae.sweeps`` looks first (building a wheel here would take too long: pyproject.toml's
settings are checked instead)."""

from pathlib import Path

import pytest

from vae.sweeps import INSTALLED, PACKAGE

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed():
    folders = {p.parent for p in (ROOT / "vae").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    found = {".".join(f.relative_to(ROOT).parts) for f in folders}
    assert set(SETUPTOOLS["packages"]) == found | {"vae.experiments"}


def test_the_experiments_folder_is_installed_as_package_data_where_the_sweeps_are_looked_up():
    assert SETUPTOOLS["package-dir"] == {"vae.experiments": "experiments"}
    assert SETUPTOOLS["package-data"]["vae.experiments"] == ["*.yaml"]
    assert INSTALLED == PACKAGE / "experiments" and not INSTALLED.exists()  # in a checkout: experiments/ only
