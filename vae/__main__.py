"""Command line: ``python -m vae train EXPERIMENT [--set key=value ...]``, ``tables``, ``figures``,
``log-px``, ``diagnose`` and ``data``. EXPERIMENT is a sweep file or the name of one under experiments/
(``fig2_mnist_aevb``). Exit status 2: a known error, said in one line (a mistyped command, option value, config
key or sweep name with the nearest one); 130 / 143: stopped by SIGINT / SIGTERM within seconds in any phase, said
in one line (a training checkpointed); once the command has returned, a signal is ignored and the process exits
with its status. No training command writes into the reference runs. The arguments and
the sweep file are read, and refused, before torch and Lightning load: --help and a bad budget are said within
a second."""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

import yaml

from vae import __version__
from vae.config import ConfigError, Sweep, load_sweep, parse_overrides, problem
from vae.names import DATA_ENV, INPUTS
from vae.runs.interrupted import Interrupted, ignore_signals, raise_on_signals
from vae.sweeps import find, sweeps

REFERENCE = Path(__file__).resolve().parent.parent / "reference"  # the repository's committed reference runs
LONG, KEEP = 1000, 100  # an error line longer than LONG echoes a value: only its first and last KEEP characters stay


def shorten(message: str) -> str:
    """``message`` with each line longer than ``LONG`` cut in the middle, so that a value echoed whole (a
    100,000-character --set value) cannot flood the terminal; the key at its start and the advice at its end stay."""
    return "\n".join(line if len(line) <= LONG else f"{line[:KEEP]} … {line[-KEEP:]}" for line in message.split("\n"))


class Parser(argparse.ArgumentParser):
    """argparse, with each error said in one line (shortened: it may echo a long value) and a value outside an
    option's choices (a subcommand, ``--engine``) answered with the nearest choice."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, shorten(f"{self.prog}: error: {message}") + "\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            choices = [str(c) for c in action.choices]
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(choices)}"
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}; {hint}")


class Help(argparse.HelpFormatter):
    """Each option's help followed by its default, where it has one that the help does not already say."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unsaid = any(action.default is v for v in (None, False, argparse.SUPPRESS)) or action.default == []
        return text if unsaid or "default" in text else f"{text} (default: %(default)s)"


# what a command leaves when a signal stops it outside a training loop (which says its own line)
STOPPED = {
    "train": "train stopped; every run stands at its last checkpoint: run the same command again to continue",
    "tables": "tables stopped; each table is whole, as written now or as it was before",
    "figures": "figures stopped; each figure is whole, as drawn now or as it was before",
    "log-px": "log-px stopped; the runs it had finished have their log_px.json, the others are as they were",
    "diagnose": "diagnose stopped; it writes nothing",
    "data": "data stopped; a download is kept only once its checksum is verified",
}


def main(argv: list[str] | None = None) -> int:
    args = command_line().parse_args(argv)
    with raise_on_signals(STOPPED[args.command]):
        try:
            try:
                sweep = read_sweep(args) if args.command == "train" else None
            except ConfigError as e:
                return refuse(e)
            return run(args, sweep)
        except Interrupted as e:
            print(e, file=sys.stderr)
            return e.exit_status


def refuse(error: Exception) -> int:
    """Say a known error in one (shortened) line; exit status 2."""
    print(shorten(f"error: {error}"), file=sys.stderr)
    return 2


WANDB_MODES = {"disabled": "disabled", "offline": "offline", "online": "online", "dryrun": "offline", "run": "online"}


def read_sweep(args: argparse.Namespace) -> Sweep:
    """The sweep that ``train`` runs, with its overrides and seeds. ``WANDB_MODE`` in the environment sets every
    run's ``wandb`` key, over the sweep file; ``--set wandb=`` wins over both."""
    overrides = parse_overrides(args.set)
    mode = os.environ.get("WANDB_MODE")
    if mode and "wandb" not in overrides:
        if mode not in WANDB_MODES:
            raise ConfigError(f"WANDB_MODE={mode}: expected one of {', '.join(WANDB_MODES)}")
        overrides["wandb"] = WANDB_MODES[mode]
    return load_sweep(find(args.experiment), overrides, args.seeds)


def command_line() -> Parser:
    """The command line: one subcommand per task, every option with its help and default."""
    parser = Parser(prog="python -m vae", description=__doc__, formatter_class=Help)
    parser.add_argument("--version", action="version", version=f"vae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str) -> Parser:
        return sub.add_parser(name, help=summary, description=summary, formatter_class=Help)

    def data_dir(command: Parser) -> None:
        command.add_argument("--data-dir", type=Path, help=f"data folder (default ${DATA_ENV} or ./data)")

    def results_dir(command: Parser) -> None:
        command.add_argument(
            "--results-dir", type=Path, default=Path("results"), help="the folder of your runs (runs/<sweep>/<run>/)"
        )

    def incomplete(command: Parser) -> None:
        command.add_argument("--include-incomplete", action="store_true", help="also use runs below their budget")

    train = command("train", "run (or continue) every run of a sweep")
    named = ", ".join(sorted(f.stem for f in sweeps().values()))
    train.add_argument(
        "experiment",
        help="a sweep file, or the name of one under experiments/ (its file name "
        f"without .yaml, or its name: key): {named}",
    )
    train.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys (values in YAML: lr=0.02, lr=null, nz=[3,5])",
    )
    train.add_argument("--only", nargs="*", metavar="RUN", help="run only these run names of the sweep")
    train.add_argument(
        "--seeds",
        type=int,
        help="seeds per grid point, counting up from the config's seed (default: the sweep file's seeds, else 1)",
    )
    results_dir(train)
    train.add_argument(
        "--restart",
        action="store_true",
        help="train again from zero the runs that have results but no checkpoint (their "
        "metrics, status and W&B run are discarded); never a run whose files git tracks",
    )
    train.add_argument(
        "--discard-tracked",
        action="store_true",
        help="with --restart, also discard the results of runs whose files git tracks",
    )
    train.add_argument(
        "--reference",
        type=Path,
        default=Path("reference"),
        help="the committed reference runs, which training refuses to write into (as it does the "
        "repository's own reference/)",
    )
    data_dir(train)
    train.add_argument(
        "--engine",
        choices=["local", "ray", "stack"],
        default="local",
        help="local: runs one after another here; ray: one run per task on a Ray cluster; "
        "stack: the AEVB runs together in one process, in batched kernels (for a GPU)",
    )
    train.add_argument(
        "--address", help="Ray cluster address (e.g. auto, ray://head:10001); default: start Ray on this machine"
    )
    train.add_argument("--gpus", type=int, help="GPUs of the Ray cluster started here (default: detected)")
    train.add_argument("--cpus-per-run", type=float, default=1.0, help="CPU cores each Ray task reserves")
    train.add_argument("--gpus-per-run", type=float, default=1.0, help="GPUs each Ray task reserves")
    train.add_argument(
        "--stack-size", type=int, help="stack engine: models per stack (default: every run that can share one)"
    )
    data = command("data", "verify (and download if missing) the datasets; print their facts")
    data_dir(data)
    tables = command("tables", "tables and scorecards from the logged runs, beside the paper")
    results_dir(tables)
    tables.add_argument(
        "--reference",
        type=Path,
        default=Path("reference"),
        help="the committed reference runs, compared beside the user's (alone when there are none)",
    )
    tables.add_argument(
        "--settings", default="tables", help="the tables' settings: a file, or the name of one under experiments/"
    )
    incomplete(tables)
    figures = command("figures", "Figures 2-5 from the logged runs, with the paper's curves behind")
    results_dir(figures)
    incomplete(figures)
    figures.add_argument(
        "--reference",
        type=Path,
        default=Path("reference"),
        help="the committed reference runs, drawn behind the user's (alone when there are none)",
    )
    figures.add_argument(
        "--settings",
        default="figures",
        help="which runs Figures 4 and 5 show: a file, or the name of one under experiments/",
    )
    figures.add_argument(
        "--no-wandb", dest="wandb", action="store_false", help="do not add the figures to the runs' W&B pages"
    )
    diagnose = command(
        "diagnose", "a trained run's test bound split into reconstruction and KL, and its active latent dimensions"
    )
    diagnose.add_argument("runs", type=Path, nargs="+", help="run folders (results/runs/<sweep>/<run>)")
    data_dir(diagnose)
    diagnose.add_argument("--points", type=int, default=10000, help="test images used")
    diagnose.add_argument(
        "--inputs",
        nargs="+",
        default=["test"],
        choices=INPUTS,
        help="what q(z|x) is shown: the test images, their Bernoulli draws, as many fantasies "
        "x ~ p(x|z) (default: test)",
    )
    log_px = command(
        "log-px",
        "log p(x) by importance sampling beside the bound, for trained runs' last "
        "checkpoints (written to each run's log_px.json for `tables`)",
    )
    log_px.add_argument("runs", type=Path, nargs="+", help="run folders (results/runs/<sweep>/<run>)")
    data_dir(log_px)
    log_px.add_argument("--k", type=int, default=5000, help="importance samples per image")
    log_px.add_argument("--points", type=int, default=1000, help="the first this many test images")
    return parser


def run(args: argparse.Namespace, sweep: Sweep | None) -> int:
    """Carry out the command (``sweep``: train's); the exit status."""
    from vae.data import DataError, data_dir, load_frey, load_mnist
    from vae.optional import MissingDependency
    from vae.protocol.divergence import RunDiverged
    from vae.results.runs import ReportError
    from vae.runs.engine import SweepFailed
    from vae.runs.folder import ResultsError, global_rank

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    try:
        if args.command == "train":
            from vae.runs.engine import Engine, run_sweep

            assert sweep is not None  # read before torch loads (main)

            engine = Engine(args.engine, args.address, args.gpus, args.gpus_per_run, args.cpus_per_run, args.stack_size)
            run_sweep(
                sweep,
                args.results_dir,
                args.data_dir,
                args.only,
                engine,
                restart=args.restart,
                discard_tracked=args.discard_tracked,
                reference=(args.reference, REFERENCE),
            )
            if global_rank() == 0:
                from vae.results.wandb_paper import log_paper_curves

                logged = log_paper_curves(sweep, args.results_dir)
                if logged:
                    print(f"added the paper's curves to the W&B group {sweep.name}: {', '.join(logged)}")
        elif args.command == "tables":
            from vae.results.runs import gather
            from vae.results.tables import write_tables
            from vae.runs.folder import check_writable, writing

            settings = read_settings(find(args.settings, "settings"))
            shown = gather(args.results_dir, args.reference, args.include_incomplete)
            check_writable(shown.folder / "tables")
            with writing(shown.folder / "tables"):
                write_tables(shown, settings)
        elif args.command == "figures":
            from vae.results.figures import image_figures, log_to_wandb, paper_figures, planned_images
            from vae.results.runs import gather
            from vae.runs.folder import check_writable, writing

            settings = read_settings(find(args.settings, "settings"))
            shown = gather(args.results_dir, args.reference, args.include_incomplete)
            out = shown.folder / "figures"
            check_writable(out)
            images = planned_images(shown.folder, settings)
            with writing(out):
                written, runs = paper_figures(shown)
                written += image_figures(images, out)
            print("wrote " + ", ".join(str(p) for p in written))
            if args.wandb and shown.users:  # the reference runs' W&B pages are not the user's
                updated = log_to_wandb(runs, {p.stem: p for p in written})
                print(f"added the figures to the W&B pages of {updated} run(s)")
        elif args.command == "log-px":
            from vae.results.log_px import evaluate_log_px

            for run in args.runs:
                r = evaluate_log_px(run, data_dir(args.data_dir), args.k, args.points)
                print(
                    f"{run}: log p(x) {r['log_px']:.2f}, bound {r['elbo']:.2f}, gap {r['gap']:.2f} nats "
                    f"({r['points']} test images, k={r['k']}, at {r['samples']:,d} samples)"
                )
        elif args.command == "diagnose":
            import pandas as pd

            from vae.results.diagnose import latent_report

            rows = [
                latent_report(run, data_dir(args.data_dir), args.points, inputs=kind)
                for run in args.runs
                for kind in args.inputs
            ]
            print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".2f"))
        else:
            splits = load_mnist(data_dir(args.data_dir))
            print(
                f"MNIST in {data_dir(args.data_dir)}: checksums ok; train {tuple(splits.train.shape)}, "
                f"valid {tuple(splits.valid.shape)}, test {tuple(splits.test.shape)}"
            )
            frey_train, frey_test = load_frey(data_dir(args.data_dir))
            print(f"Frey Face: checksum ok; train {tuple(frey_train.shape)}, test {tuple(frey_test.shape)}")
    except (ConfigError, DataError, MissingDependency, ReportError, ResultsError, RunDiverged, SweepFailed) as e:
        return refuse(e)
    except Interrupted as e:
        if global_rank() == 0:  # under DDP every rank stops; one says so
            print(e, file=sys.stderr)
        return e.exit_status
    return 0


def read_settings(path: Path) -> dict[str, Any]:
    """A settings file of ``tables`` / ``figures`` (experiments/tables.yaml, experiments/figures.yaml)."""
    try:
        settings = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(
            f"cannot read the settings file {path} ({e.strerror}); the defaults are in experiments/"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"the settings file {path} is not valid YAML ({problem(e)})") from None
    if not isinstance(settings, dict):
        raise ConfigError(f"the settings file {path} must be a mapping; see experiments/tables.yaml and figures.yaml")
    return settings


def console() -> None:
    """The ``vae`` console script (``[project.scripts]`` in pyproject.toml). A signal that comes once the command
    has returned is ignored: the process exits with the command's status within about a second."""
    status = main()
    ignore_signals()
    sys.exit(status)


if __name__ == "__main__":
    console()
