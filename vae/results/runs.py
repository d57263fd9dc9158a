"""Logged runs read back for tables and figures (Figures 2 and 3), and grouped into curves.

Only logged runs are read (``<results>/runs/<sweep>/<run>/``: config, metrics and status), in the results folder
and in each folder in it that holds runs of its own (``make smoke`` writes ``results/smoke/runs/``); a run of such
a folder is labelled with it (sweep ``smoke/smoke``), so that sweeps of one name in two folders stay apart. A run
whose ``metrics.csv`` is not the record of its points is skipped with a warning. Runs are grouped into curves by
(sweep, dataset, algorithm, nz); runs in one curve must have the same config except the seed and execution and
logging settings, or the curve is refused. Incomplete runs (budget not reached) are left out unless asked for. User
runs and the committed reference runs live apart (``results/`` and ``reference/`` by default); without user runs
the reference is shown alone. A run belongs to Figure 3 when it estimates the marginal likelihood (``evaluation:
marginal``), otherwise to Figure 2; sweeps named ``ablation-*`` change the protocol on purpose and belong to
neither.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vae.config import EXECUTION_KEYS, LOGGING_KEYS, ConfigError, make_config
from vae.results.paper import PANEL, RUNNING, paper_panel
from vae.runs.checkpoint import read_checkpoint
from vae.runs.folder import ResultsError, RunFolder, read_metrics, same_row

CURVE = ("sweep", "dataset", "algorithm", "nz")
ABLATION = "ablation-"  # sweep-name prefix of the ablation studies


class ReportError(RuntimeError):
    """Runs that cannot be tabulated honestly (mixed configs under one label, or none at all)."""


@dataclass(frozen=True)
class LoggedRun:
    """One run as logged: its folder, sweep, config, metrics and whether it reached its budget."""

    path: Path
    sweep: str
    config: dict[str, Any]
    metrics: pd.DataFrame
    complete: bool
    log_px: dict[str, Any]  # the importance-sampled log p(x) of the last checkpoint, if measured

    @property
    def curve(self) -> tuple[Any, ...]:
        """(sweep, dataset, algorithm, nz): the runs of one curve are its seeds."""
        return (self.sweep, self.config["dataset"], self.config["algorithm"], self.config["nz"])

    @property
    def figure(self) -> int:
        """2, or 3 for a run that estimates the marginal likelihood."""
        return paper_panel(self.config)[0]

    @property
    def ablation(self) -> bool:
        """Whether the run belongs to an ablation sweep (``ablation-*``)."""
        return sweep_name(self.sweep).startswith(ABLATION)

    @property
    def panel(self) -> str:
        """The paper's panel name in its curves (``load_paper``)."""
        return paper_panel(self.config)[1]


def sweep_name(label: str) -> str:
    """The sweep's own name in a run's sweep label (``smoke/smoke``: ``smoke``)."""
    return label.rsplit("/", 1)[-1]


def results_folders(results_dir: Path, besides: Path | None = None) -> list[Path]:
    """``results_dir`` and each folder in it, where it holds runs (``<folder>/runs/<sweep>/<run>/``), sorted;
    never ``besides`` (the reference runs, should they lie there). Folders deeper down (``results/gpu/tf32``, the
    TF32 runs of ``make gpu-check``) are read by naming them as the results folder."""
    found = {
        p.parents[3]
        for pattern in ("runs/*/*/config.yaml", "*/runs/*/*/config.yaml")
        for p in Path(results_dir).glob(pattern)
    }
    return sorted(f for f in found if besides is None or f.resolve() != besides.resolve())


def load_runs(results_dir: Path, include_incomplete: bool = False, besides: Path | None = None) -> list[LoggedRun]:
    """Every run in ``results_folders`` with a config and at least one logged point, labelled with the folder
    in ``results_dir`` it lies in; a run folder whose files cannot be read is skipped with a warning that
    says which file and why."""
    runs = []
    for root in results_folders(results_dir, besides):
        inside = root.relative_to(results_dir).as_posix()
        for folder in RunFolder.all(root):
            run = load_run(folder, "" if inside == "." else f"{inside}/", include_incomplete)
            if run is not None:
                runs.append(run)
    return runs


def load_run(folder: RunFolder, label: str, include_incomplete: bool) -> LoggedRun | None:
    """The run of ``folder``, its sweep labelled ``<label><sweep>``; None where it has no logged point, cannot be
    read (said in a warning) or is incomplete and not asked for."""
    if not folder.metrics_file.is_file():
        return None
    try:
        cfg = make_config(folder.started_config())
        status = folder.status()
        problem = metrics_problem(folder, status)
        if problem:
            repair = (
                "rerunning its train command rewrites it from the run's checkpoint"
                if folder.has_checkpoint()
                else "the run has no checkpoint to rewrite it from"
            )
            print(f"warning: run skipped: {folder.metrics_file} {problem}; {repair}", file=sys.stderr)
            return None
        metrics = folder.metrics()
        complete = folder.standing(cfg).finished
        log_px = folder.log_px()
    except (ResultsError, ConfigError) as e:
        print(f"warning: run skipped: {e}", file=sys.stderr)
        return None
    if not (complete or include_incomplete):
        return None
    return LoggedRun(folder.path, label + folder.sweep, cfg.to_dict(), metrics, complete, log_px)


def metrics_problem(folder: RunFolder, status: dict[str, Any]) -> str | None:
    """Why the run's ``metrics.csv`` is not the record of its points, or None: the file must hold the last evaluation
    of ``status`` as the last up to the status's samples (it may be ahead: a run still training, or killed), and,
    where the run has a checkpoint, every row its history logged up to the checkpoint's samples."""
    try:
        metrics = read_metrics(folder.metrics_file)
    except ValueError as e:
        return f"cannot be read ({e})"
    last = status.get("last")
    if last:
        evaluated = metrics[
            (metrics["samples"] <= status["samples"]) & metrics.filter(like="test/").notna().any(axis=1)
        ].to_dict("records")
        if not evaluated or not same_row(evaluated[-1], last):
            return (
                f"does not hold the last evaluation of {folder.status_file.name} (at {last['samples']:,d} "
                "samples) as its last"
            )
    if folder.has_checkpoint():
        axis = read_checkpoint(folder)["sample_axis"]
        departure = folder.metrics_departure(axis["history"], axis["samples"])
        if departure:
            return f"does not match the run's checkpoint ({departure})"
    return None


@dataclass(frozen=True)
class Shown:
    """What ``tables`` and ``figures`` show: the runs of ``folder`` (where their outputs go), the reference runs
    beside them, and whether ``folder`` holds the user's runs (False: the reference shown alone)."""

    folder: Path
    runs: list[LoggedRun]
    reference: list[LoggedRun]
    users: bool = True
    include_incomplete: bool = False


def gather(results_dir: Path, reference_dir: Path | None = None, include_incomplete: bool = False) -> Shown:
    """The user's runs (every folder of runs in ``results_dir``, named in one line) beside the reference runs,
    or, when the user has none yet, the reference alone. A reference run counts as far as it has reached: a GPU
    unit extends its runs to the paper's budget over several slots."""
    if reference_dir is None or not reference_dir.is_dir() or reference_dir.resolve() == results_dir.resolve():
        print(f"runs read from {read_from(results_dir)}")
        return Shown(results_dir, load_runs(results_dir, include_incomplete), [], True, include_incomplete)
    runs = load_runs(results_dir, include_incomplete, reference_dir)
    if not runs:
        print(
            f"no {'logged' if include_incomplete else 'complete'} runs under {read_from(results_dir, reference_dir)} "
            f"yet: showing the committed reference runs of {reference_dir} alone"
        )
        return Shown(reference_dir, load_runs(reference_dir, True), [], False, True)
    print(f"runs read from {read_from(results_dir, reference_dir)}, beside the reference runs of {reference_dir}")
    return Shown(results_dir, runs, load_runs(reference_dir, True), True, include_incomplete)


def read_from(results_dir: Path, besides: Path | None = None) -> str:
    """The folders of runs that ``load_runs`` reads, as said to the user (``results/runs, results/smoke/runs``)."""
    return ", ".join(f"{f}/runs" for f in results_folders(results_dir, besides)) or f"{results_dir}/runs"


def group_curves(runs: list[LoggedRun]) -> dict[tuple[Any, ...], list[LoggedRun]]:
    """Runs by curve; refuses a curve whose runs differ in anything but seed, execution and logging settings."""
    groups: dict[tuple[Any, ...], list[LoggedRun]] = defaultdict(list)
    for run in runs:
        groups[run.curve].append(run)
    for curve, members in groups.items():
        free = EXECUTION_KEYS | LOGGING_KEYS | {"seed"}
        first = {k: v for k, v in members[0].config.items() if k not in free}
        for other in members[1:]:
            diff = sorted(k for k, v in other.config.items() if k not in free and first.get(k) != v)
            if diff:
                raise ReportError(
                    f"runs {members[0].path} and {other.path} share the curve "
                    f"{dict(zip(CURVE, curve, strict=True))} but their configs differ in {diff}; "
                    "put different configs in different sweeps"
                )
    return dict(groups)


def figure_runs(runs: list[LoggedRun], figure: int) -> list[LoggedRun]:
    """The runs of Figure 2 or 3, in curve order (possibly none)."""
    return sorted(
        (r for r in runs if r.config["dataset"] in PANEL and r.figure == figure and not r.ablation),
        key=lambda r: (r.curve, r.config["seed"]),
    )


def ablation_runs(runs: list[LoggedRun]) -> list[LoggedRun]:
    """The runs of the ablation sweeps (possibly none)."""
    return [r for r in runs if r.ablation and r.config["dataset"] in PANEL]


def no_runs(results_dir: Path, include_incomplete: bool) -> ReportError:
    """The error of a command that found no runs to show."""
    hint = "" if include_incomplete else " (pass --include-incomplete to use unfinished runs)"
    return ReportError(f"no {'logged' if include_incomplete else 'complete'} runs under {results_dir}/runs{hint}")


def metric_column(split: str, metric: str) -> str:
    """The logged column of a table split: ``train/elbo``, ``test/marginal``, ``train/running_elbo``."""
    return "train/running_elbo" if split == RUNNING else f"{split}/{metric}"


def splits(members: list[LoggedRun], figure: int) -> list[str]:
    """The splits a curve has: train and test, and ``train_running`` for a Figure 2 curve where some run logged
    the running average."""
    return ["train", "test"] + ([RUNNING] if figure == 2 and logged(members, metric_column(RUNNING, "elbo")) else [])


def logged(members: list[LoggedRun], column: str) -> list[LoggedRun]:
    """The runs that logged ``column``."""
    return [m for m in members if column in m.metrics and m.metrics[column].notna().any()]
