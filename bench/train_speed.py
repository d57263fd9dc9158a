"""Training throughput of the paper's models: the suite's own training path against the straightforward
PyTorch code a user would write for the same model. ``make bench`` runs it.

Models (§5, App. C): MNIST 784-500-Nz with a Bernoulli decoder, Frey Face 560-200-Nz with a Gaussian decoder
whose mean is a sigmoid (and the suite's log-variance floor); Gaussian encoder with two linear heads; all
parameters from N(0, 0.01^2); minibatch M = 100, estimator B (eq. 10), L = 1, Nz = 20 unless ``--nz``.

Contenders, all in this one process, with torch's default thread settings:

(a) ``suite``: ``vae.runs.train.run_one``, the function ``make reproduce-mnist`` calls for every run, on a
    temporary results folder: a real ``lightning.Trainer`` (its settings are run_one's, untouched), the
    ``SampleAxis`` module over an ``AEVB`` stack of one, our Adagrad, manual optimization, ``steps_per_call``
    optimizer steps per Lightning ``training_step``, data resident, CSV logger and the periodic-checkpoint
    callback in place. Overrides: ``lr`` fixed (0.02) so that no step-size selection runs, ``wandb=disabled``,
    and ``eval_start`` = ``budget`` = 1e12 so that no evaluation falls inside the measurement. The bench
    hands run_one two things through its own parameters (no module is patched): ``callbacks=[timer]``, one
    callback that the Trainer gets after its own, which timestamps the end of every ``training_step`` (reading
    the ``SampleAxis`` module's ``samples``) and stops the fit after ``--seconds``; and ``data=``, the
    config's ``vae.data.RunData`` datamodule, one per config kept for the whole bench, so that the datasets
    are read once (later fits find them loaded in ``setup``). Throughput = training samples between the end of
    the first ``training_step`` that reached 150 optimizer steps (past Adagrad's 100 warm-up steps, which skip
    the update) and the last one, over the wall time between them: everything the Trainer does between steps
    is included; data loading, Trainer setup and teardown (the final checkpoint) are not. A fresh ``run_one``
    (new model, new run folder) per repetition.
(b) ``plain``: a minimal loop over data in memory: ``torch.randint`` minibatch indices, the model written
    as in pytorch/examples' VAE (``nn.Linear`` layers ``fc1, fc21, fc22, fc3, fc4``, the bound's terms
    inline, ``binary_cross_entropy_with_logits`` for the Bernoulli decoder), the paper's N(0, I) weight
    prior as an explicit term of the loss (1/N of its negative log-density), ``torch.optim.Adagrad`` with
    its defaults except ``lr``, ``zero_grad`` / ``backward`` / ``step``.
(c) ``dataloader``: (b)'s step fed by ``DataLoader(TensorDataset(train_x), batch_size=100, shuffle=True)``,
    as pytorch/examples' training loop is.
(d) ``lightning``: (b)'s model and loss as a ``LightningModule`` with Lightning's default automatic
    optimization, ``configure_optimizers`` returning ``torch.optim.Adagrad``, (c)'s DataLoader; the
    Trainer runs without logger, progress bar, checkpointing or model summary (the leanest settings,
    which favour it), and is timed with (a)'s callback and warm-up rule, a new Trainer per repetition.
(a-ws) the suite's wake-sleep run, timed as (a); for the wall-time projection only.

Repetitions round-robin over the contenders (``--repeats`` rounds of ``--seconds`` each) so that machine
noise hits all alike; the table gives the median samples/s per contender and ratios of medians.

Also measured: the seconds of one full evaluation as the suite does it at every evaluation point (a stack of
one, ``AEVB([cfg])``: ``evaluate`` on the training set and on the test set with one set of ``eval_generators``,
estimator B, L = 1, in ``eval_batch`` chunks), and a GEMM limit: the time of the matrix products alone of one
step (forward ``addmm`` of each linear layer, backward products for the weight gradient and, past the first
layer, the input gradient; ``out=`` buffers, so no allocation), converted to samples/s. No training step can
be faster than that on this machine with these BLAS kernels; "(a) / GEMM" is the share of it the suite
reaches. The projection is one curve of Figure 2 at the paper's 1e8 samples: training at (a)'s (or
(a-ws)'s) rate, an evaluation at each of its log-spaced evaluation points, and §5's step-size selection
(3 candidates x 1e5 samples, each with a training-set evaluation).

    .venv/bin/python bench/train_speed.py [--dataset mnist|frey|both] [--seconds 2] [--repeats 7] [--nz 20]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vae.algorithms import AEVB
from vae.algorithms.evaluation import eval_generators, evaluate
from vae.config import Config, RunSpec, load_sweep
from vae.data import RunData
from vae.protocol.schedule import eval_points, round_up
from vae.runs.train import run_one

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = {
    "mnist": ("fig2_mnist_aevb.yaml", "fig2_mnist_wakesleep.yaml"),
    "frey": ("fig2_frey_aevb.yaml", "fig2_frey_wakesleep.yaml"),
}
LR = 0.02
WARM_STEPS = 150  # past Adagrad's 100 warm-up steps (no update) and the first calls' one-time costs
PAPER_SAMPLES = 10**8
NEVER = 10**12


def sweep_config(dataset: str, nz: int, algorithm: str = "aevb") -> Config:
    """The Figure 2 sweep file's config for this Nz (``make reproduce-*``'s), with the bench's overrides."""
    name = SWEEPS[dataset][algorithm != "aevb"]
    sweep = load_sweep(
        ROOT / "experiments" / name, dict(nz=nz, lr=LR, wandb="disabled", budget=NEVER, eval_start=NEVER)
    )
    return sweep.runs[0].config


@functools.cache
def run_data(cfg: Config) -> RunData:
    """``cfg``'s datamodule (data from ``$VAE_DATA_DIR``), loaded once and reused by every fit of the bench."""
    data = RunData(cfg)
    data.setup("fit")
    return data


class StepTimer(L.Callback):
    """Timestamps the end of every training_step; stops the fit ``seconds`` after the warm-up."""

    def __init__(self, seconds: float, M: int, samples: Callable[[L.LightningModule, int], int]) -> None:
        self.seconds, self.warm, self.samples = seconds, WARM_STEPS * M, samples
        self.start: tuple[float, int] | None = None
        self.end: tuple[float, int] | None = None
        self.batches = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        self.batches += 1
        done = self.samples(pl_module, self.batches)
        if self.start is None:
            if done >= self.warm:
                self.start = (now, done)
            return
        self.end = (now, done)
        if now - self.start[0] >= self.seconds:
            trainer.should_stop = True

    def rate(self) -> float:
        if self.start is None or self.end is None:
            raise RuntimeError("the fit ended before the measurement window; raise --seconds")
        return (self.end[1] - self.start[1]) / (self.end[0] - self.start[0])


# ------------------------------------------------------------------ (a) the suite
class Suite:
    """(a), (a-ws): a fresh ``run_one`` per measurement, with the timer and the config's datamodule injected."""

    def __init__(self, cfg: Config, tmp: Path, label: str) -> None:
        self.cfg, self.data, self.tmp, self.label, self.count = cfg, run_data(cfg), tmp, label, 0

    def measure(self, seconds: float) -> float:
        timer = StepTimer(seconds, self.cfg.M, lambda module, batches: module.samples)
        self.count += 1
        run_one("bench", RunSpec(f"{self.label}-{self.count}", self.cfg), self.tmp, data=self.data, callbacks=[timer])
        return timer.rate()


# ------------------------------------------------------------------ (b), (c), (d): user code
class UserVAE(nn.Module):
    """The paper's model written the pytorch/examples way (``examples/vae/main.py``), App. C's sizes."""

    def __init__(self, cfg: Config, x_dim: int) -> None:
        super().__init__()
        self.gaussian = cfg.decoder != "bernoulli"
        self.floor = cfg.decoder_logvar_floor
        self.fc1 = nn.Linear(x_dim, cfg.hidden)
        self.fc21 = nn.Linear(cfg.hidden, cfg.nz)
        self.fc22 = nn.Linear(cfg.hidden, cfg.nz)
        self.fc3 = nn.Linear(cfg.nz, cfg.hidden)
        self.fc4 = nn.Linear(cfg.hidden, x_dim)
        if self.gaussian:
            self.fc5 = nn.Linear(cfg.hidden, x_dim)  # the decoder's log-variance head
        with torch.no_grad():
            for p in self.parameters():
                p.normal_(0.0, cfg.init_std)
        self.weights = [m.weight for m in self.modules() if isinstance(m, nn.Linear)]
        self.n_train = cfg.n_train

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Minus (eq. 10 averaged over the minibatch + (1/N) log N(W; 0, I) of the weight matrices)."""
        h = torch.tanh(self.fc1(x))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        hd = torch.tanh(self.fc3(z))
        if self.gaussian:
            mean = torch.sigmoid(self.fc4(hd))
            lv = self.fc5(hd)
            if self.floor is not None:
                lv = self.floor + F.softplus(lv - self.floor)
            nll = 0.5 * torch.sum(math.log(2 * math.pi) + lv + (x - mean).pow(2) / lv.exp())
        else:
            nll = F.binary_cross_entropy_with_logits(self.fc4(hd), x, reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        neg_log_prior = 0.5 * sum(w.pow(2).sum() for w in self.weights)  # up to a constant
        return (nll + kld) / len(x) + neg_log_prior / self.n_train


class Plain:
    """(b): data in memory, random minibatches, torch.optim.Adagrad."""

    def __init__(self, cfg: Config, train_x: torch.Tensor) -> None:
        self.cfg, self.x = cfg, train_x
        self.model = UserVAE(cfg, train_x.shape[1])
        self.opt = torch.optim.Adagrad(self.model.parameters(), lr=LR)

    def batches(self):
        n, M = len(self.x), self.cfg.M
        while True:
            yield self.x[torch.randint(n, (M,))]

    def measure(self, seconds: float) -> float:
        model, opt = self.model, self.opt
        for i, x in enumerate(self.batches()):
            if i == WARM_STEPS:
                start = time.perf_counter()
            elif i > WARM_STEPS and i % 10 == 0 and time.perf_counter() - start >= seconds:
                return (i - WARM_STEPS) * self.cfg.M / (time.perf_counter() - start)
            loss = model.loss(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
        raise AssertionError


class WithDataLoader(Plain):
    """(c): (b) fed by a shuffling DataLoader over a TensorDataset."""

    def __init__(self, cfg: Config, train_x: torch.Tensor) -> None:
        super().__init__(cfg, train_x)
        self.loader = DataLoader(TensorDataset(train_x), batch_size=cfg.M, shuffle=True)

    def batches(self):
        for _ in itertools.count():
            for (x,) in self.loader:
                yield x


class LitVAE(L.LightningModule):
    """(d): the user model with automatic optimization."""

    def __init__(self, cfg: Config, train_x: torch.Tensor) -> None:
        super().__init__()
        self.vae = UserVAE(cfg, train_x.shape[1])
        self.train_x, self.M = train_x, cfg.M

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        return self.vae.loss(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adagrad(self.parameters(), lr=LR)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.train_x), batch_size=self.M, shuffle=True)


class Lit:
    def __init__(self, cfg: Config, train_x: torch.Tensor) -> None:
        self.module = LitVAE(cfg, train_x)
        self.M = cfg.M

    def measure(self, seconds: float) -> float:
        timer = StepTimer(seconds, self.M, lambda module, batches: batches * self.M)
        trainer = L.Trainer(
            max_epochs=-1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
        )
        trainer.fit(self.module)
        return timer.rate()


# ------------------------------------------------------------------ evaluation cost and GEMM limit
def evaluation_seconds(cfg: Config, repeats: int) -> float:
    """One evaluation point of the suite (as ``SampleAxis.measure`` does it) for a stack of one: the bound on the
    full training set and on the test set."""
    stack = AEVB([cfg])
    data = run_data(cfg)
    stack.attach(data.train_x, data.test_x)
    times = []
    for _ in range(repeats):
        generators = eval_generators(stack)
        start = time.perf_counter()
        evaluate(stack, stack.train_x, generators)
        evaluate(stack, stack.test_x, generators)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_limit(cfg: Config, x_dim: int, seconds: float) -> float:
    """Samples/s if a training step cost only its matrix products (forward and backward)."""
    M, H, nz = cfg.M, cfg.hidden, cfg.nz
    heads = 2 if cfg.decoder != "bernoulli" else 1
    layers = [(x_dim, H, False), (H, nz, True), (H, nz, True), (nz, H, True)] + [(H, x_dim, True)] * heads
    ops: list[Callable[[], Any]] = []
    for fan_in, fan_out, input_grad in layers:
        x, w, b = torch.randn(M, fan_in), torch.randn(fan_out, fan_in) * 0.01, torch.randn(fan_out)
        g, y = torch.randn(M, fan_out), torch.empty(M, fan_out)
        gw, gx = torch.empty(fan_out, fan_in), torch.empty(M, fan_in)
        ops.append(functools.partial(torch.addmm, b, x, w.t(), out=y))
        ops.append(functools.partial(torch.mm, g.t(), x, out=gw))
        if input_grad:
            ops.append(functools.partial(torch.mm, g, w, out=gx))

    def step() -> None:
        for op in ops:
            op()

    for _ in range(20):
        step()
    rates = []
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            for _ in range(10):
                step()
            n += 10
        rates.append(n * M / (time.perf_counter() - start))
    return statistics.median(rates)


def curve_hours(cfg: Config, rate: float, eval_s: float) -> float:
    """Wall time of one Figure 2 curve at the paper's budget: the training samples (1e8, plus the losing
    step-size candidates' ``lr_select_samples`` each), an evaluation at each of the curve's evaluation
    points, and one training-set evaluation per step-size candidate."""
    points = len(eval_points(100_000, PAPER_SAMPLES, cfg.eval_per_decade, cfg.M))
    select = len(cfg.lr_candidates)
    train_eval_s = eval_s * cfg.n_train / (cfg.n_train + _test_size(cfg))
    samples = PAPER_SAMPLES + (select - 1) * round_up(100_000, cfg.M)
    return (samples / rate + points * eval_s + select * train_eval_s) / 3600


def _test_size(cfg: Config) -> int:
    return len(run_data(cfg).test_x)


# ------------------------------------------------------------------ Figure 2 projection
def figure2(seconds: float, repeats: int, tmp: Path) -> None:
    """(a) and (a-ws) for every curve of Figure 2 (the sweep files' Nz grids), round-robin, and the wall time
    each curve and each make target would take at the paper's 1e8 samples on this machine."""
    curves = []
    for dataset in ("mnist", "frey"):
        for algorithm in ("aevb", "wakesleep"):
            grid = load_sweep(ROOT / "experiments" / SWEEPS[dataset][algorithm != "aevb"])
            for run in grid.runs:
                cfg = sweep_config(dataset, run.config.nz, algorithm)
                curves.append((dataset, algorithm, cfg, Suite(cfg, tmp / "fig2", f"{dataset}-{algorithm}-{cfg.nz}")))
    print(
        f"\nFigure 2 projection: the suite's training path (as (a)) for all {len(curves)} curves, "
        f"{repeats} rounds of {seconds:g} s each"
    )
    rates: dict[int, list[float]] = {i: [] for i in range(len(curves))}
    for r in range(repeats):
        for i, (*_, suite) in enumerate(curves):
            rates[i].append(suite.measure(seconds))
        print(f"  round {r + 1} done", flush=True)
    evals: dict[tuple[str, int], float] = {}
    print("\n| data | algorithm | Nz | samples/s | one evaluation point (s) | hours at 1e8 samples |")
    print("|---|---|---:|---:|---:|---:|")
    hours: dict[tuple[str, str], float] = {}
    for i, (dataset, algorithm, cfg, _) in enumerate(curves):
        key = (dataset, cfg.nz)
        if key not in evals:
            evals[key] = evaluation_seconds(sweep_config(dataset, cfg.nz), 1)
        rate = statistics.median(rates[i])
        h = curve_hours(cfg, rate, evals[key])
        hours[(dataset, algorithm)] = hours.get((dataset, algorithm), 0.0) + h
        print(f"| {dataset} | {algorithm} | {cfg.nz} | {rate:,.0f} | {evals[key]:.2f} | {h:.2f} |")
    mnist_aevb, mnist_ws = hours[("mnist", "aevb")], hours[("mnist", "wakesleep")]
    frey = hours[("frey", "aevb")] + hours[("frey", "wakesleep")]
    print(
        f"\none run after another: make reproduce-mnist {mnist_aevb:.1f} h, make reproduce-frey {frey:.1f} h, "
        f"MNIST wake-sleep {mnist_ws:.1f} h; make reproduce-fig2 (all {len(curves)} curves) "
        f"{mnist_aevb + mnist_ws + frey:.1f} h"
    )


# ------------------------------------------------------------------ main
def bench(dataset: str, nz: int, seconds: float, repeats: int, tmp: Path) -> dict[str, float]:
    cfg = sweep_config(dataset, nz)
    ws_cfg = sweep_config(dataset, nz, "wakesleep")
    train_x = run_data(cfg).train_x
    x_dim = train_x.shape[1]
    names = {
        "a": "(a) suite: run_one, Lightning Trainer, AEVB",
        "b": "(b) plain loop, data in memory",
        "c": "(c) plain loop, DataLoader",
        "d": "(d) LightningModule, automatic optimization",
        "ws": "(a-ws) suite: run_one, wake-sleep",
    }
    contenders = {
        "a": Suite(cfg, tmp / dataset, "aevb"),
        "b": Plain(cfg, train_x),
        "c": WithDataLoader(cfg, train_x),
        "d": Lit(cfg, train_x),
        "ws": Suite(ws_cfg, tmp / dataset, "ws"),
    }
    print(
        f"\n{dataset}: {x_dim}-{cfg.hidden}-{nz}, {cfg.decoder} decoder, M={cfg.M}, estimator {cfg.estimator}, "
        f"L={cfg.L}; {repeats} rounds of {seconds:g} s per contender, torch threads {torch.get_num_threads()}"
    )
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(repeats):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for key in order:
            rates[key].append(contenders[key].measure(seconds))
        print(f"  round {r + 1}: " + "  ".join(f"{k} {rates[k][-1]:,.0f}" for k in contenders), flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    eval_s = evaluation_seconds(cfg, 3)
    limit = gemm_limit(cfg, x_dim, min(seconds, 3.0))

    print(f"\n| {dataset} {x_dim}-{cfg.hidden}-{nz} | samples/s (median) | min-max | (a) / this |")
    print("|---|---:|---:|---:|")
    for key, name in names.items():
        lo, hi = min(rates[key]), max(rates[key])
        print(f"| {name} | {med[key]:,.0f} | {lo:,.0f}-{hi:,.0f} | {med['a'] / med[key]:.2f} |")
    print(f"| GEMM limit (the matrix products of a step alone) | {limit:,.0f} | | {med['a'] / limit:.2f} |")
    paired = {k: statistics.median(a / o for a, o in zip(rates["a"], rates[k], strict=True)) for k in ("b", "d")}
    print(
        f"\n(a)/(b) = {med['a'] / med['b']:.2f}, (a)/(d) = {med['a'] / med['d']:.2f} (medians; median of the "
        f"rounds' own ratios: {paired['b']:.2f}, {paired['d']:.2f}); (a) reaches {100 * med['a'] / limit:.0f}% "
        "of the GEMM limit"
    )
    print(
        f"one evaluation point (train {len(train_x):,d} + test {_test_size(cfg):,d}, estimator B, L=1): {eval_s:.2f} s"
    )
    print(
        f"projected wall time of one Figure 2 curve at 1e8 samples (Nz={nz}, training + "
        f"{len(eval_points(100_000, PAPER_SAMPLES, cfg.eval_per_decade, cfg.M))} evaluation points + step-size "
        f"selection): AEVB {curve_hours(cfg, med['a'], eval_s):.2f} h, "
        f"wake-sleep {curve_hours(ws_cfg, med['ws'], eval_s):.2f} h"
    )
    return med


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["mnist", "frey", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per contender per round")
    parser.add_argument("--repeats", type=int, help="rounds over the contenders (default 7; 2 with --figure2)")
    parser.add_argument("--nz", type=int, default=20)
    parser.add_argument(
        "--figure2",
        action="store_true",
        help="instead: the suite's throughput for every Figure 2 curve and the wall time of "
        "each at the paper's 1e8 samples (default 2 rounds)",
    )
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    print(
        f"torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} CPUs, load {_load()}"
    )
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vae-bench-") as tmp:
        if args.figure2:
            figure2(args.seconds, args.repeats or 2, Path(tmp))
        else:
            for dataset in ["mnist", "frey"] if args.dataset == "both" else [args.dataset]:
                bench(dataset, args.nz, args.seconds, args.repeats or 7, Path(tmp))
    print(
        f"\nbench time {time.perf_counter() - began:.0f} s; load average now {_load()} (other processes on "
        "the machine slow every contender; the round-robin spreads that over all of them)"
    )
    return 0


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
