"""The reference on the paper's x-axis, trained unit by unit on a GPU machine (``make gpu-reference``).

A unit (``experiments/reference_units.yaml``) is a list of sweeps, each with the budget its panel reaches in
the paper. Training never writes into the reference folder: ``stage`` copies the unit's committed runs that
have a checkpoint, or have reached the unit's budget without one, into a staging results folder; ``train``
continues or starts them there with the stack engine (a finished run is left as it is) until a deadline
(SIGTERM then: every run checkpoints and stops), and ``pack`` puts each run's folder (config, metrics, status,
checkpoint with its checksum) into tar files small enough to travel back from the machine. ``adopt``, run where
the repository is, replaces the reference's run folders with them, ready to commit; the next slot continues
from there. A run folder carries its checkpoint only while the run is below its unit's budget or was trained
here, which costs its parameters and Adagrad sums in float32 (about 9 MB for an MNIST Nz = 200 model).

    python -m vae.runs.units stage|train|pack UNIT --staging DIR [--seconds S] [--out DIR]
    python -m vae.runs.units adopt TAR... [--reference reference]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from vae.config import ConfigError, load_sweep
from vae.runs.folder import RunFolder

UNITS_FILE = Path("experiments/reference_units.yaml")
RUN_FILES = ("config.yaml", "metrics.csv", "status.json", "checkpoints/last.ckpt", "checkpoints/last.ckpt.sha256")
TAR_BYTES = 15 * 2**20  # each tar under the 16 MiB that one file may have to travel back from the GPU machine
GRACE_SECONDS = 120  # after SIGTERM, the time a sweep has to checkpoint and exit


@dataclass(frozen=True)
class Part:
    """One sweep of a unit: its file, the budget, the runs it trains (None: all) and the seeds per grid point."""

    sweep: Path
    budget: int
    only: tuple[str, ...] | None = None
    seeds: int | None = None

    def runs(self) -> list[tuple[str, str]]:
        """(sweep name, run name) of every run this part trains."""
        sweep = load_sweep(self.sweep, seeds=self.seeds)
        return [(sweep.name, r.name) for r in sweep.runs if self.only is None or r.name in self.only]


def load_units(path: Path = UNITS_FILE) -> dict[str, list[Part]]:
    doc = yaml.safe_load(path.read_text())
    return {
        name: [
            Part(path.parent / p["sweep"], int(p["budget"]), tuple(p["only"]) if "only" in p else None, p.get("seeds"))
            for p in parts
        ]
        for name, parts in doc.items()
    }


def unit(name: str, path: Path = UNITS_FILE) -> list[Part]:
    units = load_units(path)
    if name not in units:
        raise ConfigError(f"unit {name!r} is not in {path}; units: {', '.join(units)}")
    return units[name]


def stage(parts: list[Part], reference: Path, staging: Path) -> list[str]:
    """Copy into ``staging`` (replacing what is there) the unit's reference runs that have a checkpoint, and
    those that reached the part's budget without one (trained elsewhere: the unit leaves them as they are);
    the other runs start from zero there. Returns the copied runs."""
    copied = []
    for part in parts:
        for sweep, run in part.runs():
            source, target = reference / "runs" / sweep / run, staging / "runs" / sweep / run
            folder = RunFolder(source)
            if folder.has_checkpoint() or finished(folder, part.budget):
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(source, target)
                copied.append(f"{sweep}/{run}")
    return copied


def finished(folder: RunFolder, budget: int) -> bool:
    """Whether the run in ``folder`` was trained to ``budget`` samples or beyond, by its status."""
    status = folder.status()
    return status.get("budget", 0) >= budget and status.get("samples", 0) >= status["budget"]


def train(
    parts: list[Part], staging: Path, data_dir: Path | None, seconds: float, settings: tuple[str, ...] = ()
) -> int:
    """Train each part with the stack engine until ``seconds`` have passed; at the deadline the sweep gets
    SIGTERM (it checkpoints and exits 143). Returns 0, or the first failing sweep's exit status."""
    deadline = time.monotonic() + seconds
    status = 0
    for part in parts:
        left = deadline - time.monotonic()
        if left < 30:
            print(f"unit: no time left for {part.sweep}", flush=True)
            break
        cmd = [
            sys.executable,
            "-m",
            "vae",
            "train",
            str(part.sweep),
            "--engine",
            "stack",
            "--results-dir",
            str(staging),
            *(["--data-dir", str(data_dir)] if data_dir else []),
            *(["--seeds", str(part.seeds)] if part.seeds else []),
            *(["--only", *part.only] if part.only else []),
            "--set",
            f"budget={part.budget}",
            "wandb=disabled",
            *settings,
        ]
        print("unit:", " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd)
        try:
            status = proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                status = proc.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                status = proc.wait()
            print(f"unit: deadline reached in {part.sweep}, stopped with status {status}", flush=True)
            return 0 if status in (143, -signal.SIGTERM) else status
        if status != 0:
            print(f"unit: {part.sweep} exited with status {status}", flush=True)
            break
    return status


def pack(parts: list[Part], staging: Path, out: Path) -> list[Path]:
    """Each staged run's files into ``out/<unit files>.tar``, as few tars as fit ``TAR_BYTES`` each (a run is
    never split); returns them."""
    out.mkdir(parents=True, exist_ok=True)
    groups: list[list[Path]] = [[]]
    size = 0
    for part in parts:
        for sweep, run in part.runs():
            folder = staging / "runs" / sweep / run
            files = [folder / f for f in RUN_FILES if (folder / f).is_file()]
            if not files:
                continue
            run_bytes = sum(f.stat().st_size for f in files)
            if groups[-1] and size + run_bytes > TAR_BYTES:
                groups.append([])
                size = 0
            groups[-1].extend(files)
            size += run_bytes
    tars = []
    for i, files in enumerate(g for g in groups if g):
        tar = out / f"runs{i}.tar"
        with tarfile.open(tar, "w") as t:
            for f in files:
                t.add(f, arcname=str(f.relative_to(staging)))
        tars.append(tar)
    return tars


def adopt(tars: list[Path], reference: Path) -> list[str]:
    """Replace the reference's run folders by the runs in ``tars`` (from ``pack``); returns them."""
    adopted = []
    for tar in tars:
        with tarfile.open(tar) as t:
            members = t.getmembers()
            bad = [
                m.name
                for m in members
                if not m.isfile()
                or Path(m.name).is_absolute()
                or ".." in Path(m.name).parts
                or Path(m.name).parts[0] != "runs"
                or len(Path(m.name).parts) < 4
            ]
            if bad:
                raise ConfigError(f"{tar} is not a packed unit: it holds {bad[0]}")
            runs = sorted({Path(*Path(m.name).parts[:3]) for m in members})
            for run in runs:
                shutil.rmtree(reference / run, ignore_errors=True)
                adopted.append(str(run.relative_to("runs")))
            t.extractall(reference, members=members, filter="data")
    return adopted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vae.runs.units", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["stage", "train", "pack", "adopt", "list"])
    parser.add_argument("names", nargs="*", help="the unit (stage, train, pack) or the tars (adopt)")
    parser.add_argument("--staging", type=Path, default=Path("results/units"))
    parser.add_argument("--reference", type=Path, default=Path("reference"))
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--seconds", type=float, default=480.0, help="train: stop the unit after this long")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "results/units-out")))
    parser.add_argument("--set", nargs="*", default=[], help="train: execution settings for every sweep")
    parser.add_argument("--units", type=Path, default=UNITS_FILE, help="the units file")
    args = parser.parse_args(argv)
    try:
        if args.action == "list":
            for name, parts in load_units(args.units).items():
                print(f"{name}: " + ", ".join(f"{p.sweep.name} to {p.budget:.3g}" for p in parts))
            return 0
        if args.action == "adopt":
            for run in adopt([Path(n) for n in args.names], args.reference):
                print(f"adopted {run}")
            return 0
        if len(args.names) != 1:
            parser.error(f"{args.action} takes one unit")
        parts = unit(args.names[0], args.units)
        if args.action == "stage":
            copied = stage(parts, args.reference, args.staging)
            print(f"staged {len(copied)} runs (a checkpoint, or finished): {', '.join(copied) or 'none'}")
        elif args.action == "train":
            return train(parts, args.staging, args.data_dir, args.seconds, tuple(args.set))
        else:
            for tar in pack(parts, args.staging, args.out):
                print(f"packed {tar} ({tar.stat().st_size / 2**20:.1f} MiB)")
    except (ConfigError, OSError, tarfile.TarError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
