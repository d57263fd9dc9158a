"""The files of ``experiments/`` by name, with or without the repository at hand: ``python -m vae train
fig2_mnist_aevb`` (the file name without ``.yaml``, or the sweep's ``name:``, fig2-mnist-aevb) and the settings
of ``tables`` and ``figures``.

The YAML files live once, in the repository's top-level ``experiments/``; a built wheel installs them as
``vae/experiments/`` (``package-dir`` in pyproject.toml maps that folder into the package). A name is looked up
in the installed copy where there is one, else in the repository's folder beside the package (a source
checkout, an editable install). Nothing heavy is imported: the command line resolves names before torch loads.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import yaml

from vae.config import ConfigError

PACKAGE = Path(__file__).resolve().parent
INSTALLED, REPOSITORY = PACKAGE / "experiments", PACKAGE.parent / "experiments"


def experiments_folder() -> Path:
    """Where the named files are: the copy installed with the package, else the repository's ``experiments/``."""
    return INSTALLED if INSTALLED.is_dir() else REPOSITORY


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's where there is one: every command lists the sweeps


def sweeps() -> dict[str, Path]:
    """The sweep files of ``experiments/`` by their ``name:`` (the settings files have none)."""
    found = {}
    for file in sorted(experiments_folder().glob("*.yaml")):
        try:
            doc = yaml.load(file.read_text(), Loader=LOADER)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("name"), str):
            found[doc["name"]] = file
    return found


def find(given: str | os.PathLike[str], kind: str = "sweep") -> Path:
    """``given`` where it exists or has a folder in it (its reader says what is wrong with it); else the file of
    ``experiments/`` it names, by file name (``.yaml`` optional) or sweep name; else a ``ConfigError`` in one
    line that names the nearest ``kind`` (sweep, settings)."""
    path = Path(given)
    if os.path.lexists(path) or len(path.parts) != 1:
        return path
    folder = experiments_folder()
    stem = path.name.removesuffix(".yaml")
    if (folder / f"{stem}.yaml").is_file():
        return folder / f"{stem}.yaml"
    by_name = sweeps()
    if stem in by_name:
        return by_name[stem]
    close = difflib.get_close_matches(stem, [f.stem for f in folder.glob("*.yaml")] + list(by_name), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "python -m vae train --help lists the sweeps"
    raise ConfigError(f"{str(given)!r} is neither a file nor the name of a {kind} file in {folder}; {hint}")
