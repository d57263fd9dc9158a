"""k models of one algorithm trained together, k >= 1: what every update rule of the paper acts on.

A ``Stack`` holds the k models' encoders and decoders as stacked layers (``vae.models.stacked``) and each
model's own training random stream. Subclasses (AEVB, wake-sleep, MCEM) supply the update rule: ``step``, one
iteration for all k models, and the optimizers it uses. A single run is a stack of one; the configs of a stack
differ in nothing but ``nz`` and ``seed`` (``check_stackable``).

Random numbers: model j has its own generator, seeded ``seed + 1``, and its own permutation for minibatches
without replacement; every draw of model j (minibatch indices, dynamic binarization, noise, fantasies) comes
from that generator in the order and shapes of a stack of one, so model j's trajectory does not depend on
the models beside it (up to floating-point summation order).

Data parallelism (DDP over ranks, stacks of one): every rank draws the whole global minibatch of M (indices,
binarization, noise) from identically seeded generators and keeps its share; each rank's loss is its share of
the bound's sum divided by M and one all-reduce sums the gradients, so the step is the single-process step up
to summation order. The full-set evaluation is split across ranks by chunk and reduced with one all-reduce.

Fused steps (``fuse``): on CUDA (``compile: true``) the arithmetic of an iteration, each region between two
random draws (AEVB: eq. 8's bound, its loss and the running sum; its backward pass; the Adagrad update), runs
as kernels compiled by torch.compile (inductor), and a CUDA graph (``vae.algorithms.graphs``) replays them with
the draws. The draws stay eager, from each model's own generator, so the random numbers and every stream's
position are those of eager steps; only floating-point rounding differs. Eager execution is the reference.

Model j's state (``run_state``) is its own: unpadded parameters, Adagrad sums and step size, random stream,
algorithm state, and the running sum of its minibatch bounds since the last logged running average. It moves
between stacks of any size, which is how runs are checkpointed, how the §5 step-size candidates are trained side
by side, and how a run started in a stack continues alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vae.algorithms.fusion import compiled
from vae.algorithms.optim import StackedAdagrad
from vae.config import Config, ConfigError
from vae.models.bounds import elbo
from vae.models.nets import weight_matrices
from vae.models.stacked import stack_nets
from vae.models.vae import VAE

STACKED_KEYS = ("nz", "seed")  # what may differ between the models of one stack


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


def check_stackable(configs: Sequence[Config]) -> None:
    """Raise ConfigError unless the configs can share a stack: one algorithm and config but ``nz`` and ``seed``;
    several models only on one device."""
    if not configs:
        raise ConfigError("a stack needs at least one config")
    if len(configs) > 1 and any(cfg.devices * cfg.num_nodes > 1 for cfg in configs):
        raise ConfigError("a stack of several models runs in one process on one device; set devices=1 and "
                          "num_nodes=1, or train the runs one by one")
    shared = [{k: v for k, v in cfg.identity().items() if k not in STACKED_KEYS} for cfg in configs]
    differ = sorted(k for k in shared[0] if any(s[k] != shared[0][k] for s in shared))
    if differ:
        values = "; ".join(f"{k}: {[s[k] for s in shared]}" for k in differ)
        raise ConfigError(f"stacked configs may differ only in nz and seed, but they differ in {values}")


class Stream:
    """One model's training random stream and minibatch position."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.generator = torch.Generator(device).manual_seed(cfg.seed + 1)
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def indices(self, n: int, M: int, replacement: bool) -> torch.Tensor:
        """The M training indices of the next minibatch: drawn with replacement, or the next M of a permutation
        redrawn whenever fewer than M are left."""
        device = self.generator.device
        if replacement:
            return torch.randint(n, (M,), device=device, generator=self.generator)
        if self.perm is None or self.pos + M > n:
            self.perm = torch.randperm(n, device=device, generator=self.generator)
            self.pos = 0
        self.pos += M
        return self.perm[self.pos - M:self.pos]

    def state(self) -> dict[str, Any]:
        return dict(rng=self.generator.get_state(), perm=None if self.perm is None else self.perm.clone(),
                    pos=self.pos)

    def load(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["rng"])
        self.perm = None if state["perm"] is None else state["perm"].to(self.generator.device)
        self.pos = state["pos"]


class Stack(nn.Module):
    """k models of one algorithm, trained in the same kernels. Model j starts from ``VAE(configs[j])``."""

    stackable = True  # False: the update rule supports one model per stack only
    graphable = True  # False: never captured as a CUDA graph (``vae.algorithms.graphs``)
    minibatch_bound = True  # False: the update rule has no per-iteration bound to average (``accumulate``)

    def __init__(self, configs: Sequence[Config]) -> None:
        super().__init__()
        check_stackable(configs)
        if len(configs) > 1 and not self.stackable:
            raise ConfigError(f"algorithm={configs[0].algorithm!r} trains one model per stack")
        self.configs = tuple(configs)
        self.cfg = configs[0]  # everything but nz and seed, shared by the stack
        models = [VAE(cfg) for cfg in configs]
        self._shapes = [{name: p.shape for name, p in m.named_parameters()} for m in models]
        self.encoder = None if models[0].encoder is None else stack_nets([m.encoder for m in models])
        self.decoder = stack_nets([m.decoder for m in models])
        self.lrs = [cfg.lr or cfg.lr_candidates[0] for cfg in configs]
        self.samples = 0
        self.streams: list[Stream] = []
        self._pending_streams: list[dict[str, Any] | None] = [None] * len(configs)
        self._optimizers: list[StackedAdagrad] | None = None
        self.train_x = self.test_x = torch.empty(0)
        # per model, the sum of the minibatch bounds since ``running_since`` samples (``accumulate``)
        self.register_buffer("running", torch.zeros(len(configs), dtype=torch.float64), persistent=False)
        self.running_since = 0
        self.fused = False
        self._compiled: dict[str, Callable[..., Any]] = {}

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

    @property
    def logs_running(self) -> bool:
        """Whether the running average of the minibatch bounds is logged (``running_every``)."""
        return self.cfg.running_every is not None

    def accumulate(self, sums: torch.Tensor | None) -> None:
        """Add this iteration's sum of minibatch bounds per model (k, float64: see ``bound_sums``) to each model's
        running sum, on the device, with no host sync; None where no running average is logged."""
        if sums is not None:
            self.running += sums

    def bound_sums(self, bounds: torch.Tensor) -> torch.Tensor | None:
        """Each model's sum of its minibatch bounds (k, n: this rank's share), in float64, for ``accumulate``;
        None, and nothing computed, where no running average is logged."""
        return bounds.detach().sum(-1, dtype=torch.float64) if self.logs_running else None

    # ---------------------------------------------------------------- fused steps
    def fuse(self, on: bool) -> None:
        """Run the update rule's arithmetic regions (``region``) and the Adagrad updates compiled by torch.compile
        (on), or eagerly (off, the reference). Compilation happens at the first call of each region."""
        self.fused = on
        self._compiled = {}
        for opt in self.optimizers:
            opt.compile_update(on)

    def region(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a method of this stack holding arithmetic but no random draw) compiled if the stack is fused,
        else ``fn`` itself. Shapes are static: a stack of another size compiles its own kernels."""
        if not self.fused:
            return fn
        name = fn.__name__
        if name not in self._compiled:
            self._compiled[name] = compiled(fn)
        return self._compiled[name]

    def running_average(self) -> list[float]:
        """Each model's average minibatch bound per datapoint over the iterations since the last call (the
        paper's train curve), summed over the ranks; the running sum starts again from here."""
        if rank_and_world()[1] > 1:
            dist.all_reduce(self.running)
        iterations = (self.samples - self.running_since) // self.samples_per_step
        values = [float(v) / (iterations * self.cfg.M) for v in self.running]
        self.running.zero_()
        self.running_since = self.samples
        return values

    def selection_score(self, generators: Sequence[torch.Generator]) -> list[float]:
        """What §5's step-size selection maximizes, per model: the bound on the full training set."""
        return self.evaluate(self.train_x, generators)

    def algorithm_state(self, j: int) -> dict[str, Any]:
        """Model j's training state outside parameters, optimizers and stream (MCEM's chains); none here."""
        return {}

    def load_algorithm_state(self, j: int, state: dict[str, Any]) -> None:
        """Restore what ``algorithm_state`` returned."""

    # ---------------------------------------------------------------- set-up
    @property
    def optimizers(self) -> list[StackedAdagrad]:
        """Adagrad (§5) over each of ``optimized_modules``: weight matrices with the prior N(0, prior_sd^2 I) as
        weight decay 1/(N prior_sd^2), i.e. the gradient of (1/N) log p(theta) added to the per-datapoint bound
        (eq. 8 plus the prior, divided by N), then the other parameters without it; a step size per model."""
        if self._optimizers is None:
            cfg = self.cfg
            decay = 1.0 / (cfg.n_train * cfg.prior_sd**2)
            self._optimizers = []
            for module in self.optimized_modules():
                weights = weight_matrices(module)
                ids = {id(p) for p in weights}
                others = [p for p in module.parameters() if id(p) not in ids]
                groups = [dict(params=weights, weight_decay=decay), dict(params=others, weight_decay=0.0)]
                self._optimizers.append(StackedAdagrad(groups, self.lrs, cfg.adagrad_eps, cfg.adagrad_warmup))
        return self._optimizers

    def set_lrs(self, lrs: Sequence[float]) -> None:
        self.lrs = [float(lr) for lr in lrs]
        for opt in self.optimizers:
            opt.set_lrs(self.lrs)

    def attach(self, train_x: torch.Tensor, test_x: torch.Tensor) -> None:
        """The data (on the stack's device) and each model's random stream there, restored if a state is
        pending from ``load_run_state``. On CUDA, the steps are fused if the config says ``compile``, and the
        process's float32 matrix products follow ``matmul_precision``."""
        self.train_x, self.test_x = train_x, test_x
        if train_x.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.cfg.matmul_precision == "tf32"
            self.fuse(self.cfg.compile)
        self.streams = [Stream(cfg, train_x.device) for cfg in self.configs]
        for stream, state in zip(self.streams, self._pending_streams, strict=True):
            if state is not None:
                stream.load(state)
        self._pending_streams = [None] * self.k

    @property
    def device(self) -> torch.device:
        return self.decoder.hidden.weight.device

    # ---------------------------------------------------------------- random draws
    def minibatch(self) -> torch.Tensor:
        """Each model's share of M training datapoints (k, M_rank, D), drawn by index from its own stream and
        binarized dynamically if configured; all M are drawn on every rank."""
        cfg = self.cfg
        idx = [s.indices(len(self.train_x), cfg.M, cfg.replacement) for s in self.streams]
        x = self.train_x[idx[0]].unsqueeze(0) if self.k == 1 else self.train_x[torch.stack(idx)]
        if cfg.binarize == "dynamic":
            x = self.bernoulli(x)
        return x[:, share(cfg.M)]

    def generators(self) -> list[torch.Generator]:
        return [s.generator for s in self.streams]

    def bernoulli(self, p: torch.Tensor, generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """Bernoulli draws of p (k, n, D), model j's from its own generator."""
        gens = generators or self.generators()
        if self.k == 1:
            return torch.bernoulli(p, generator=gens[0])
        return torch.stack([torch.bernoulli(pj, generator=g) for pj, g in zip(p, gens, strict=True)])

    def normal(self, *shape: int, generators: Sequence[torch.Generator] | None = None,
               sizes: Sequence[int] | None = None) -> torch.Tensor:
        """Standard normal draws (*shape, k, n, max size) for ``shape`` = (..., n): model j draws (..., n,
        sizes[j]) from its own generator (sizes: the latent sizes by default), zero-padded to the largest."""
        gens = generators or self.generators()
        sizes = sizes or [cfg.nz for cfg in self.configs]
        *lead, n = shape
        draws = [torch.randn((*lead, n, size), device=self.device, generator=g) for size, g in zip(sizes, gens,
                                                                                                  strict=True)]
        if self.k == 1:
            return draws[0].unsqueeze(-3)
        width = max(sizes)
        if all(size == width for size in sizes):
            return torch.stack(draws, dim=-3)
        out = torch.zeros((*lead, self.k, n, width), device=self.device)
        for j, draw in enumerate(draws):
            out[..., j, :, :sizes[j]] = draw
        return out

    # ---------------------------------------------------------------- bound, gradients, evaluation
    def bound(self, x: torch.Tensor, eps: torch.Tensor, estimator: str | None = None) -> torch.Tensor:
        """The SGVB bound per model and datapoint, (k, n), for x (k, n, D) and eps (L, k, n, max Nz): estimator
        A (eq. 6) or B (eq. 7, eq. 10), the config's by default."""
        return elbo(x, self.encoder, self.decoder, estimator or self.cfg.estimator, len(eps), eps=eps)

    def reduce_gradients(self, params: list[nn.Parameter]) -> None:
        """Sum the ranks' gradients (each already divided by the global M) in one all-reduce."""
        if rank_and_world()[1] == 1:
            return
        grads = [p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        for g, part in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(part.view_as(g))

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, generators: Sequence[torch.Generator]) -> list[float]:
        """Each model's average lower bound per datapoint over all of ``x`` (estimator B, L = 1), in batches of
        ``eval_batch``, model j drawing from ``generators[j]``. Under DDP every rank draws the noise of every
        batch and bounds every ``ranks``-th batch; the sums are reduced."""
        rank, world = rank_and_world()
        total = torch.zeros(self.k, device=x.device, dtype=torch.float64)
        for i, chunk in enumerate(x.split(self.cfg.eval_batch)):
            xs = chunk.expand(self.k, *chunk.shape)
            if self.cfg.binarize == "dynamic":
                xs = self.bernoulli(xs, generators)
            eps = self.normal(1, len(chunk), generators=generators)
            if i % world == rank:
                total += self.bound(xs, eps, "B").sum(-1, dtype=torch.float64)
        if world > 1:
            dist.all_reduce(total)
        return [float(t) / len(x) for t in total]

    def eval_generators(self) -> list[torch.Generator]:
        """Evaluation noise depends only on (seed, samples): it never disturbs the training streams."""
        return [torch.Generator(self.device).manual_seed(cfg.seed * 1_000_003 + self.samples)
                for cfg in self.configs]

    # ---------------------------------------------------------------- one model's state
    def _slice(self, j: int, name: str) -> tuple[Any, ...]:
        """Model j's block of a stacked tensor; a stack of one holds its tensors unstacked."""
        if self.k == 1:
            return (...,)
        return (j, *(slice(0, n) for n in self._shapes[j][name]))

    def model(self, j: int) -> VAE:
        """Model j as a ``VAE`` on the stack's device (a copy of its parameters, without padding)."""
        model = VAE(self.configs[j])
        model.load_state_dict(self.parameters_of(j))
        return model.to(self.device)

    def parameters_of(self, j: int) -> dict[str, torch.Tensor]:
        return {name: p.detach()[self._slice(j, name)].clone() for name, p in self.named_parameters()}

    def run_state(self, j: int) -> dict[str, Any]:
        """Model j's whole training state, unpadded: ``state_dict`` (the names of ``VAE``), ``optimizer_states``
        (one torch optimizer state per optimizer, its step size in ``lr``), ``stream``, ``algorithm`` and
        ``running`` (the running sum of its minibatch bounds and the sample count it started at)."""
        names = {p: name for name, p in self.named_parameters()}
        optimizer_states = []
        for opt in self.optimizers:
            saved = opt.state_dict()
            params = [p for group in opt.param_groups for p in group["params"]]
            state = {i: {"sum": opt.state[p]["sum"][self._slice(j, names[p])].clone()}
                     for i, p in enumerate(params) if "sum" in opt.state[p]}
            groups = [group | {"lr": self.lrs[j]} for group in copy.deepcopy(saved["param_groups"])]
            optimizer_states.append({"state": state, "param_groups": groups})
        stream = self.streams[j].state() if self.streams else self._pending_streams[j]
        return dict(state_dict=self.parameters_of(j), optimizer_states=optimizer_states, lr=self.lrs[j],
                    stream=stream, algorithm=copy.deepcopy(self.algorithm_state(j)),
                    running=dict(sum=self.running[j].clone(), since=self.running_since))

    @torch.no_grad()
    def load_run_state(self, j: int, state: dict[str, Any]) -> None:
        """Put a ``run_state`` into slot j. The models of a stack share the Adagrad step count."""
        named = dict(self.named_parameters())
        for name, value in state["state_dict"].items():
            named[name][self._slice(j, name)] = value
        names = {p: name for name, p in named.items()}
        for opt, saved in zip(self.optimizers, state["optimizer_states"], strict=True):
            params = [p for group in opt.param_groups for p in group["params"]]
            for i, p in enumerate(params):
                eps = self.cfg.adagrad_eps
                if "sum" in saved["state"].get(i, {}):
                    opt.accumulator(p, eps)[self._slice(j, names[p])] = saved["state"][i]["sum"]
                elif "sum" in opt.state[p]:  # a model that has not stepped yet: its accumulator starts at eps
                    opt.state[p]["sum"][self._slice(j, names[p])] = eps
            for group, saved_group in zip(opt.param_groups, saved["param_groups"], strict=True):
                group["step"] = saved_group["step"]
        lrs = list(self.lrs)
        lrs[j] = state["lr"]
        self.set_lrs(lrs)
        if self.streams:
            self.streams[j].load(state["stream"])
        else:
            self._pending_streams[j] = state["stream"]
        self.load_algorithm_state(j, copy.deepcopy(state["algorithm"]))
        self.running[j] = state["running"]["sum"]
        self.running_since = state["running"]["since"]

    def replicate(self, models: Sequence[int]) -> Stack:
        """A new stack of the same algorithm holding copies of ``models`` (in that order), on this device, with
        the same data: for training §5's step-size candidates side by side."""
        other = type(self)([self.configs[j] for j in models]).to(self.device)
        other.attach(self.train_x, self.test_x)
        other.fuse(self.fused)
        for i, j in enumerate(models):
            other.load_run_state(i, self.run_state(j))
        other.samples = self.samples
        return other
