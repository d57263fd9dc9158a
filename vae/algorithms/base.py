"""What every algorithm of the suite shares: the networks of App. C, Adagrad with the MAP weight prior
(§5) and its step-size selection, and the Figure 2 protocol on the "training samples evaluated" axis.
Subclasses (AEVB, wake-sleep) implement ``train_steps`` and ``configure_optimizers``.

Speed: one optimizer step of these networks costs less than Lightning's per-step overhead, so one Lightning
``training_step`` runs up to ``steps_per_call`` optimizer steps (manual optimization). Data stays on the
device; minibatch indices and noise come from a device generator; nothing syncs with the host between
evaluation points. The trajectory does not depend on ``steps_per_call``: steps are cut at evaluation points.

Data parallelism (DDP over ``devices * num_nodes`` ranks): every rank holds the data and an identically
seeded generator, draws the whole global minibatch (indices, binarization, noise) and keeps its share of the
M datapoints; each rank's loss is its share of the bound's sum divided by M, and one all-reduce sums the
gradients, so the step is the single-process step up to floating-point summation order. The full-set
evaluation is split across ranks by chunk and reduced with one all-reduce.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset

from vae.bounds import elbo
from vae.config import Config, make_config
from vae.data import X_DIM, load_dataset
from vae.marginal import log_marginal_hmc, log_marginal_is
from vae.nets import GaussianMLP, init_normal_, make_decoder, weight_matrices
from vae.optim import Adagrad
from vae.schedule import round_up, run_points


class RunDiverged(RuntimeError):
    """The bound or the parameters stopped being finite."""


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks (0, 1 without torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share(n: int) -> slice:
    """This rank's part of n items split over the ranks, the first ``n mod ranks`` taking one more."""
    rank, world = rank_and_world()
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class Ticks(IterableDataset):
    """An endless stream of placeholders: the real minibatches are drawn on the device."""

    def __iter__(self) -> Iterator[int]:
        while True:
            yield 0


class SampleAxisModule(L.LightningModule):
    """Encoder q(z|x) and decoder p(x|z) of App. C, initialised from N(0, init_std^2), trained by the
    subclass's ``train_steps`` and evaluated on the full training and test sets at log-spaced points."""

    has_encoder = True  # False for MCEM (App. E), which samples the posterior instead

    def __init__(self, config: Config | dict[str, Any], data_dir: str | Path | None = None) -> None:
        super().__init__()
        cfg = config if isinstance(config, Config) else make_config(config)
        self.save_hyperparameters({"config": cfg.to_dict()})
        self.cfg = cfg
        self.data_dir = data_dir
        self.automatic_optimization = False
        x_dim = X_DIM[cfg.dataset]
        if self.has_encoder:
            self.encoder = GaussianMLP(x_dim, cfg.hidden, cfg.nz)
        self.decoder = make_decoder(cfg.decoder, cfg.nz, cfg.hidden, x_dim, cfg.decoder_logvar_floor)
        init_normal_(self, cfg.init_std, torch.Generator().manual_seed(cfg.seed))
        self.samples = 0
        self.lr: float | None = cfg.lr
        self.lr_selection: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self._pending_rng: torch.Tensor | None = None
        self._perm: torch.Tensor | None = None
        self._pos = 0
        self._since_eval = (0, 0.0)  # (samples, train seconds) at the last evaluation
        self.run_label = f"nz{cfg.nz}"

    # ---------------------------------------------------------------- the bound
    def elbo(self, x: torch.Tensor, estimator: str | None = None, L: int | None = None,
             generator: torch.Generator | None = None, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Lower bound per datapoint (eq. 6 or eq. 7) with this model's encoder and decoder."""
        return elbo(x, self.encoder, self.decoder, estimator or self.cfg.estimator, L or self.cfg.L, generator, eps)

    def noise(self, *shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal draws on the device from ``generator`` (the training generator by default)."""
        return torch.randn(shape, device=self.device, generator=generator or self.generator)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, generator: torch.Generator) -> float:
        """Average lower bound per datapoint over all of ``x`` (estimator B, L = 1), in batches. Under DDP
        every rank draws the noise of every batch and bounds every ``ranks``-th batch; the sum is reduced."""
        rank, world = rank_and_world()
        total = torch.zeros((), device=x.device, dtype=torch.float64)
        for i, chunk in enumerate(x.split(self.cfg.eval_batch)):
            if self.cfg.binarize == "dynamic":
                chunk = torch.bernoulli(chunk, generator=generator)
            eps = self.noise(1, len(chunk), self.cfg.nz, generator=generator)
            if i % world == rank:
                total += self.elbo(chunk, "B", 1, eps=eps).sum(dtype=torch.float64)
        if world > 1:
            dist.all_reduce(total)
        return float(total) / len(x)

    def reduce_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the ranks' gradients (each already divided by the global M) in one all-reduce."""
        if rank_and_world()[1] == 1:
            return
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    # ---------------------------------------------------------------- Lightning plumbing
    def train_dataloader(self) -> DataLoader:
        return DataLoader(Ticks(), batch_size=None)

    def adagrad(self, module: torch.nn.Module) -> Adagrad:
        """Adagrad over ``module`` with the parameter groups of ``adagrad_groups``."""
        return Adagrad(self.adagrad_groups(module), lr=self.lr or self.cfg.lr_candidates[0],
                       eps=self.cfg.adagrad_eps, warmup=self.cfg.adagrad_warmup)

    def adagrad_groups(self, module: torch.nn.Module) -> list[dict[str, Any]]:
        """Weight matrices, then the other parameters. The prior N(0, prior_sd^2 I) on weight matrices enters
        as weight decay 1/(N prior_sd^2), i.e. the gradient of (1/N) log p(theta) added to the per-datapoint
        bound: eq. (8) plus the prior, divided by N."""
        weights = weight_matrices(module)
        ids = {id(p) for p in weights}
        others = [p for p in module.parameters() if id(p) not in ids]
        decay = 1.0 / (self.cfg.n_train * self.cfg.prior_sd**2)
        return [dict(params=weights, weight_decay=decay), dict(params=others, weight_decay=0.0)]

    @property
    def samples_per_step(self) -> int:
        """Training samples one iteration of ``train_steps`` evaluates: a minibatch of M."""
        return self.cfg.M

    def on_fit_start(self) -> None:
        cfg, step = self.cfg, self.samples_per_step
        self.train_x, self.test_x = (t.to(self.device) for t in load_dataset(cfg, self.data_dir))
        self.points = run_points(cfg, step)
        self.budget = round_up(cfg.samples, step)

    def on_train_start(self) -> None:
        self.generator = torch.Generator(self.device).manual_seed(self.cfg.seed + 1)
        if self._pending_rng is not None:
            self.generator.set_state(self._pending_rng)
            self._pending_rng = None
        self._since_eval = (self.samples, self.train_seconds)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["sample_axis"] = dict(
            samples=self.samples, lr=self.lr, lr_selection=self.lr_selection, history=self.history,
            train_seconds=self.train_seconds, rng=self.generator.get_state(), perm=self._perm, pos=self._pos,
            chain_state=self.chain_state(),
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint["sample_axis"]
        self.samples, self.lr, self.lr_selection = state["samples"], state["lr"], state["lr_selection"]
        self.history, self.train_seconds = state["history"], state["train_seconds"]
        self._pending_rng, self._perm, self._pos = state["rng"], state["perm"], state["pos"]
        self.load_chain_state(state.get("chain_state", {}))

    def chain_state(self) -> dict[str, Any]:
        """Training state outside the parameters and optimizers (MCEM's persistent chains); none here."""
        return {}

    def load_chain_state(self, state: dict[str, Any]) -> None:
        """Restore what ``chain_state`` returned."""

    # ---------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> None:
        if self.lr is None:
            self.select_lr()
        self._evaluate_if_due()
        if self.samples >= self.budget:
            self.trainer.should_stop = True
            return
        target = next(p for p in self.points if p > self.samples)
        steps = min(self.cfg.steps_per_call, (target - self.samples) // self.samples_per_step)
        self._timed_steps(steps)
        self._evaluate_if_due()
        if self.samples >= self.budget:
            self.trainer.should_stop = True

    def _timed_steps(self, steps: int) -> None:
        start = time.perf_counter()
        self.train_steps(steps)
        self.train_seconds += time.perf_counter() - start

    def train_steps(self, steps: int) -> None:
        """Run ``steps`` optimizer iterations and add the training samples they evaluated to ``samples``."""
        raise NotImplementedError

    def adagrads(self) -> list[Adagrad]:
        opts = self.optimizers()
        return [o.optimizer for o in (opts if isinstance(opts, list) else [opts])]

    def minibatch(self) -> torch.Tensor:
        """This rank's share of M training datapoints drawn by index on the device (dynamically binarized if
        configured); all M are drawn on every rank so that the random stream is the same everywhere."""
        x = self.train_x[self._indices()]
        if self.cfg.binarize == "dynamic":
            x = torch.bernoulli(x, generator=self.generator)
        return x[share(self.cfg.M)]

    def _indices(self) -> torch.Tensor:
        n, M = len(self.train_x), self.cfg.M
        if self.cfg.replacement:
            return torch.randint(n, (M,), device=self.device, generator=self.generator)
        if self._perm is None or self._pos + M > n:
            self._perm = torch.randperm(n, device=self.device, generator=self.generator)
            self._pos = 0
        self._pos += M
        return self._perm[self._pos - M:self._pos]

    def _eval_generator(self, samples: int) -> torch.Generator:
        """Evaluation noise depends only on (seed, samples): it never disturbs the training stream."""
        return torch.Generator(self.device).manual_seed(self.cfg.seed * 1_000_003 + samples)

    def selection_score(self) -> float:
        """What ``select_lr`` maximizes: the bound on the full training set."""
        return self.evaluate(self.train_x, self._eval_generator(self.samples))

    def select_lr(self) -> None:
        """§5: pick the Adagrad global step size from ``lr_candidates`` by ``selection_score`` after the
        first ``lr_select_samples`` samples. Every candidate starts from the same initial state and noise;
        training continues from the winner, so the run equals one started with that step size forced."""
        start = self._snapshot()
        steps = round_up(self.cfg.lr_select_samples, self.samples_per_step) // self.samples_per_step
        results: dict[float, float] = {}
        finals: dict[float, tuple[dict[str, Any], float]] = {}
        for lr in self.cfg.lr_candidates:
            self._restore(start)
            for opt in self.adagrads():
                opt.set_lr(lr)
            began = self.train_seconds
            self._timed_steps(steps)
            value = self.selection_score()
            results[lr] = value if math.isfinite(value) else -math.inf
            finals[lr] = (self._snapshot(), self.train_seconds - began)
        best = max(results, key=results.__getitem__)
        if results[best] == -math.inf:
            raise RunDiverged(f"every Adagrad step size in {list(results)} diverged during selection; "
                              "try smaller lr_candidates")
        snapshot, seconds = finals[best]
        self._restore(snapshot)
        self.lr = best
        self.lr_selection = {str(k): v for k, v in results.items()}
        self._since_eval = (0, self.train_seconds - seconds)
        self.print(f"[{self.run_label}] Adagrad step size {best} picked; training-set bound after "
                   f"{self.samples} samples: " + ", ".join(f"{k}: {v:.2f}" for k, v in results.items()))
        for logger in self.loggers:
            logger.log_metrics({f"lr_select/{k}": v for k, v in results.items()}
                               | {"samples": self.samples, "lr": best})

    def _snapshot(self) -> dict[str, Any]:
        return dict(model=copy.deepcopy(self.state_dict()),
                    opts=[copy.deepcopy(o.state_dict()) for o in self.adagrads()],
                    rng=self.generator.get_state(), samples=self.samples, perm=self._perm, pos=self._pos,
                    chains=copy.deepcopy(self.chain_state()))

    def _restore(self, snap: dict[str, Any]) -> None:
        self.load_state_dict(snap["model"])
        for opt, state in zip(self.adagrads(), snap["opts"]):
            opt.load_state_dict(copy.deepcopy(state))
        self.generator.set_state(snap["rng"])
        self.samples, self._perm, self._pos = snap["samples"], snap["perm"], snap["pos"]
        self.load_chain_state(copy.deepcopy(snap["chains"]))

    # ---------------------------------------------------------------- evaluation and logging
    def _evaluate_if_due(self) -> None:
        due = self.samples in self.points and (not self.history or self.history[-1]["samples"] < self.samples)
        if not due:
            return
        row = {"samples": self.samples} | self.measure()
        if not all(math.isfinite(v) for v in row.values()) or not all(
                bool(torch.isfinite(p).all()) for p in self.parameters()):
            shown = ", ".join(f"{k} {v}" for k, v in row.items() if k != "samples")
            raise RunDiverged(
                f"[{self.run_label}] the evaluation or the parameters are not finite at step "
                f"{self.samples // self.samples_per_step} ({self.samples} samples; {shown}); the Adagrad step "
                f"size {self.lr} is likely too large for this model. "
                "The last good checkpoint is kept and nothing was written for this point: restart with a "
                "smaller lr (in a new results folder) or rerun to retry from the checkpoint.")
        done, secs = self._since_eval
        rate = (self.samples - done) / max(self.train_seconds - secs, 1e-9)
        row |= {"lr": self.lr, "time/train_s": self.train_seconds, "time/samples_per_s": rate}
        self._since_eval = (self.samples, self.train_seconds)
        self.history.append(row)
        for logger in self.loggers:
            logger.log_metrics(row)
        shown = "  ".join(f"{k} {v:9.3f}" for k, v in row.items() if k.startswith(("train/", "test/")))
        self.print(f"[{self.run_label}] samples {self.samples:>11,d}  {shown}  {rate:8.0f} samples/s")

    def measure(self) -> dict[str, float]:
        """One evaluation point: the bound on the full train and test sets (Fig. 2) and, with
        ``evaluation: marginal``, log p(x) on the first ``marginal_points`` of each (Fig. 3, App. D)."""
        gen = self._eval_generator(self.samples)
        row: dict[str, float] = {}
        if self.has_encoder:
            row |= {"train/elbo": self.evaluate(self.train_x, gen), "test/elbo": self.evaluate(self.test_x, gen)}
        if self.cfg.evaluation == "marginal":
            for split, x in (("train", self.train_x), ("test", self.test_x)):
                row[f"{split}/marginal"] = self.log_marginal(x[:self.cfg.marginal_points], gen)
        return row

    def log_marginal(self, x: torch.Tensor, generator: torch.Generator) -> float:
        """Average estimated log p(x) over ``x`` (App. D's HMC estimator, or importance sampling with the
        encoder as proposal). Every rank computes it in full: it is cheap next to training."""
        if self.cfg.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        encoder = self.encoder if self.has_encoder else None
        cfg = self.cfg
        if cfg.marginal_estimator == "is":
            values = log_marginal_is(x, self.decoder, encoder, generator, k=cfg.marginal_is_k)
        else:
            values = log_marginal_hmc(x, self.decoder, encoder, generator, n_samples=cfg.marginal_samples,
                                      n_burnin=cfg.marginal_burnin, n_steps=cfg.marginal_leapfrog,
                                      step_size=cfg.hmc_step_size, target=cfg.hmc_target)
        return float(values.double().mean())
