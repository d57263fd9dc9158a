"""k models of one algorithm trained together, k >= 1: what every update rule of the paper acts on.

A ``Stack`` holds the k models' encoders and decoders as stacked layers (``vae.models.stacked``) and the sample
count, and composes the parts every update rule shares: the models' random draws (``draws``), their optimizers
(``vae.algorithms.optim``), the running sum of their minibatch bounds (``running``) and the arithmetic regions
that run fused on CUDA (``region``). Subclasses (AEVB, wake-sleep, MCEM) supply the update rule: ``step``, one
iteration for all k models. A single run is a stack of one; the configs of a stack differ in nothing but ``nz``
and ``seed`` (``check_stackable``). A model's state moves between stacks through ``vae.algorithms.run_state``;
the full-set bound is ``vae.algorithms.evaluation``; DDP shares are ``vae.algorithms.parallel``.

Fused steps (``fuse``): on CUDA (``compile: true``) the arithmetic of an iteration, each region between two
random draws (AEVB: eq. 8's bound, its loss and the running sum; its backward pass; the Adagrad update), runs
as kernels compiled by torch.compile (inductor), and a CUDA graph (``vae.algorithms.graphs``) replays them with
the draws. The draws stay eager, from each model's own generator, so the random numbers and every stream's
position are those of eager steps; only floating-point rounding differs. Eager execution is the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vae.algorithms.draws import Draws
from vae.algorithms.evaluation import evaluate
from vae.algorithms.fusion import Regions
from vae.algorithms.optim import StackedAdagrad, adagrad
from vae.algorithms.run_state import load_run_state, parameters_of, run_state
from vae.algorithms.running import RunningBound
from vae.config import Config, ConfigError
from vae.models.bounds import elbo
from vae.models.nets import GaussianMLP
from vae.models.stacked import stack_nets
from vae.models.vae import VAE

STACKED_KEYS = ("nz", "seed")  # what may differ between the models of one stack


def check_stackable(configs: Sequence[Config]) -> None:
    """Raise ConfigError unless the configs can share a stack: one algorithm and config but ``nz`` and ``seed``
    (the budget included); several models only on one device."""
    if not configs:
        raise ConfigError("a stack needs at least one config")
    if len(configs) > 1 and any(cfg.devices * cfg.num_nodes > 1 for cfg in configs):
        raise ConfigError(
            "a stack of several models runs in one process on one device; set devices=1 and "
            "num_nodes=1, or train the runs one by one"
        )
    shared = [
        {k: v for k, v in cfg.identity().items() if k not in STACKED_KEYS} | {"budget": cfg.budget} for cfg in configs
    ]
    differ = sorted(k for k in shared[0] if any(s[k] != shared[0][k] for s in shared))
    if differ:
        values = "; ".join(f"{k}: {[s[k] for s in shared]}" for k in differ)
        raise ConfigError(f"stacked configs may differ only in nz and seed, but they differ in {values}")


class Stack(nn.Module):
    """k models of one algorithm, trained in the same kernels. Model j starts from ``VAE(configs[j])``."""

    stackable = True  # False: the update rule supports one model per stack only
    graphable = True  # False: never captured as a CUDA graph (``vae.algorithms.graphs``)
    minibatch_bound = True  # False: the update rule has no per-iteration bound to average (``running``)

    def __init__(self, configs: Sequence[Config]) -> None:
        super().__init__()
        check_stackable(configs)
        if len(configs) > 1 and not self.stackable:
            raise ConfigError(f"algorithm={configs[0].algorithm!r} trains one model per stack")
        self.configs = tuple(configs)
        self.cfg = configs[0]  # everything but nz and seed, shared by the stack
        models = [VAE(cfg) for cfg in configs]
        self.shapes = [{name: p.shape for name, p in m.named_parameters()} for m in models]
        encoders = [m.encoder for m in models if m.encoder is not None]  # a stack's models share the algorithm
        self.encoder = stack_nets(encoders) if encoders else None
        self.decoder = stack_nets([m.decoder for m in models])
        self.lrs = [cfg.lr or cfg.lr_candidates[0] for cfg in configs]
        self.samples = 0
        self.draws = Draws(configs)
        self.running = RunningBound(len(configs), self.cfg.running_every is not None)
        self.region = Regions()
        self._optimizers: list[StackedAdagrad] | None = None
        self.train_x = self.test_x = torch.empty(0)

    @property
    def k(self) -> int:
        return len(self.configs)

    @classmethod
    def step_samples(cls, cfg: Config) -> int:
        """Training samples one iteration counts: a minibatch of M, each datapoint counted
        ``count_per_datapoint`` times."""
        return cfg.M * cfg.count_per_datapoint

    @property
    def samples_per_step(self) -> int:
        return self.step_samples(self.cfg)

    @property
    def device(self) -> torch.device:
        return self.decoder.hidden.weight.device

    def _encoder(self) -> GaussianMLP:
        if self.encoder is None:
            raise ValueError(f"algorithm={self.cfg.algorithm!r} has no encoder q(z|x)")
        return self.encoder

    # ---------------------------------------------------------------- the update rule (subclasses)
    def optimized_modules(self) -> list[nn.Module]:
        """The modules with an optimizer each, in order; one optimizer over all parameters by default."""
        return [self]

    def step(self) -> None:
        """One iteration of the algorithm for every model."""
        raise NotImplementedError

    def train_steps(self, steps: int, between: Callable[[], None] = lambda: None) -> None:
        """``steps`` iterations, each adding the training samples it evaluated to ``samples``; ``between`` is
        called after each (where a stop on a signal may leave the loop, the state whole)."""
        for _ in range(steps):
            self.step()
            self.samples += self.samples_per_step
            between()

    def bound(self, x: torch.Tensor, eps: torch.Tensor, estimator: str | None = None) -> torch.Tensor:
        """The SGVB bound per model and datapoint, (k, n), for x (k, n, D) and eps (L, k, n, max Nz): estimator
        A (eq. 6) or B (eq. 7, eq. 10), the config's by default."""
        return elbo(x, self._encoder(), self.decoder, estimator or self.cfg.estimator, len(eps), eps=eps)

    def selection_score(self, generators: Sequence[torch.Generator]) -> list[float]:
        """What §5's step-size selection maximizes, per model: the bound on the full training set."""
        return evaluate(self, self.train_x, generators)

    def algorithm_state(self, j: int) -> dict[str, Any]:
        """Model j's training state outside parameters, optimizers and stream (MCEM's chains); none here."""
        return {}

    def load_algorithm_state(self, j: int, state: dict[str, Any]) -> None:
        """Restore what ``algorithm_state`` returned."""

    # ---------------------------------------------------------------- set-up
    @property
    def optimizers(self) -> list[StackedAdagrad]:
        """Adagrad over each of ``optimized_modules`` (``vae.algorithms.optim.adagrad``)."""
        if self._optimizers is None:
            self._optimizers = adagrad(self.optimized_modules(), self.cfg, self.lrs)
        return self._optimizers

    def set_lrs(self, lrs: Sequence[float]) -> None:
        self.lrs = [float(lr) for lr in lrs]
        for opt in self.optimizers:
            opt.set_lrs(self.lrs)

    def fuse(self, on: bool) -> None:
        """Run the arithmetic regions and the Adagrad updates compiled by torch.compile (on), or eagerly (off)."""
        self.region.fuse(on)
        for opt in self.optimizers:
            opt.compile_update(on)

    def attach(self, train_x: torch.Tensor, test_x: torch.Tensor) -> None:
        """The data (on the stack's device) and each model's random stream there. On CUDA, the steps are fused
        if the config says ``compile``, and the process's float32 matrix products follow ``matmul_precision``."""
        self.train_x, self.test_x = train_x, test_x
        if train_x.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.cfg.matmul_precision == "tf32"
            self.fuse(self.cfg.compile)
        self.draws.attach(train_x.device)

    # ---------------------------------------------------------------- one model
    def model(self, j: int) -> VAE:
        """Model j as a ``VAE`` on the stack's device (a copy of its parameters, without padding)."""
        model = VAE(self.configs[j])
        model.load_state_dict(parameters_of(self, j))
        return model.to(self.device)

    def run_state(self, j: int) -> dict[str, Any]:
        return run_state(self, j)

    def load_run_state(self, j: int, state: dict[str, Any]) -> None:
        load_run_state(self, j, state)

    def replicate(self, models: Sequence[int]) -> Stack:
        """A new stack of the same algorithm holding copies of ``models`` (in that order), on this device, with
        the same data: for training §5's step-size candidates side by side."""
        other = type(self)([self.configs[j] for j in models]).to(self.device)
        other.attach(self.train_x, self.test_x)
        other.fuse(self.region.on)
        for i, j in enumerate(models):
            other.load_run_state(i, self.run_state(j))
        other.samples = self.samples
        return other
