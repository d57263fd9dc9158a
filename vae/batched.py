"""k independent AEVB models of a sweep trained in the same kernels (issue 7): one process, stacked parameters,
batched matrix products.

On a GPU these networks (App. C, M = 100) are far too small to fill the device: per-step Python and kernel-
launch overhead dominates, so k models stepped together cost about what one costs. ``StackedAEVB`` holds the k
models' parameters as stacked tensors (a leading model dimension) and runs every layer as one batched matmul.

Models of different Nz share a stack by padding the latent dimension to the largest Nz of the stack. Padding,
not grouping by shape, because Figure 2's sweep has one model per Nz (Nz in {3, 5, 10, 20, 200}): grouping
would leave nothing to batch. Padded latent dimensions have exactly no effect on any number:

* the encoder heads' outputs (mu, log sigma^2) are multiplied by a 0/1 mask, so a padded dimension has
  mu = log sigma^2 = 0 whatever its weights, and its head weights get exactly zero gradient;
* its noise eps is 0, so z = mu + sigma * eps = 0, and the decoder's padded input columns get zero gradient
  and contribute exact zeros;
* its KL term of eq. (10) is 0.5 (1 + 0 - 0 - 1) = 0 with zero gradient.

Padded weights start at zero, get zero gradient, zero weight decay and an Adagrad step of 0 / sqrt(0 + eps):
they stay exactly zero. Only the floating-point summation order differs from k separate models (batched
versus single matrix products, zeros summed in).

Random numbers: model j has its own training generator, seeded ``seed + 1`` as in ``SampleAxisModule``, its
own permutation for minibatches without replacement, and draws per step exactly what ``AEVB.train_steps``
draws, in the same order and shapes: minibatch indices, the dynamic binarization if configured, then eps of
shape (L, M, Nz_j). Model j's trajectory is therefore ``AEVB(cfg_j)``'s up to floating-point rounding.
Single-process only (the stack replaces DDP, it does not combine with it). Each model has its own Adagrad
step size (``StackedAdagrad``); ``vae.stack`` selects them (§5) and runs stacks as sweeps with run folders.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from vae.algorithms.aevb import AEVB
from vae.bounds import elbo
from vae.config import Config, ConfigError
from vae.nets import BernoulliMLP, GaussianMLP
from vae.optim import Adagrad

Net = TypeVar("Net", GaussianMLP, BernoulliMLP)


class StackedLinear(nn.Module):
    """k linear layers y_j = W_j v_j + b_j in one batched matmul. ``weight`` is (k, out, in) and ``bias``
    (k, out), each layer zero-padded to the largest in/out size; rows past a layer's own output size are
    masked to exactly zero."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        k, out = len(layers), max(layer.out_features for layer in layers)
        weight = torch.zeros(k, out, max(layer.in_features for layer in layers))
        bias = torch.zeros(k, out)
        with torch.no_grad():
            for j, layer in enumerate(layers):
                weight[j, :layer.out_features, :layer.in_features] = layer.weight
                bias[j, :layer.out_features] = layer.bias
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)
        sizes = torch.tensor([layer.out_features for layer in layers])
        mask = (torch.arange(out) < sizes[:, None]).to(weight.dtype).unsqueeze(1)  # (k, 1, out)
        self.register_buffer("mask", mask if len(set(sizes.tolist())) > 1 else None, persistent=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """v: (..., k, N, in) -> (..., k, N, out); leading dimensions (the L samples of z) join N, so every
        layer is one ``baddbmm`` (a view, no copy, when there are none or L = 1)."""
        *lead, k, n, d = v.shape
        y = torch.baddbmm(self.bias.unsqueeze(1), v.movedim(-3, 0).reshape(k, -1, d), self.weight.mT)
        y = y.reshape(k, *lead, n, -1).movedim(0, -3)
        return y if self.mask is None else y * self.mask


def stack_nets(nets: Sequence[Net]) -> Net:
    """The k networks of one kind (App. C) as one network of that kind whose linear layers are stacked: the
    nets' own ``forward`` and ``log_prob`` (tanh, sigmoid mean, log-variance floor) then run all k at once."""
    template = nets[0]
    stacked = copy.deepcopy(template)
    for name, layer in template.named_children():
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"cannot stack {type(layer).__name__} layer {name!r}")
        setattr(stacked, name, StackedLinear([getattr(net, name) for net in nets]))
    return stacked


class StackedAdagrad(Adagrad):
    """``vae.optim.Adagrad`` over stacked parameters with one global step size per model: ``lrs[j]`` scales
    the update of slice j of every parameter, so the stack's optimizer is k of the normal path's Adagrads.
    Always the multi-tensor path (the fused CPU kernel takes one scalar step size); only ``update`` differs."""

    def __init__(self, params: Any, lrs: Sequence[float], eps: float, warmup: int, device: torch.device) -> None:
        super().__init__(params, lr=1.0, eps=eps, warmup=warmup)
        self.lr_values = list(lrs)  # exact, for logs and checkpoints; ``lrs`` is their copy on the device
        self.lrs = torch.tensor(self.lr_values, device=device)

    def fusable(self, params: list[torch.Tensor]) -> bool:
        return False

    def update(self, params: list[torch.Tensor], grads: list[torch.Tensor], sums: list[torch.Tensor],
               lr: float) -> None:
        """Slice j of every parameter: w_j -= lrs[j] * g_j / sqrt(sum_j) (the group's ``lr`` is 1)."""
        updates = torch._foreach_div(grads, torch._foreach_sqrt(sums))
        torch._foreach_mul_(updates, [self.lrs.view(-1, *[1] * (p.dim() - 1)) for p in params])
        torch._foreach_sub_(params, updates)

    def set_lr(self, lr: float) -> None:
        self.lr_values = [lr] * len(self.lr_values)
        self.lrs.fill_(lr)

    def set_model_lr(self, j: int, lr: float) -> None:
        self.lr_values[j] = lr
        self.lrs[j] = lr


def check_stackable(configs: Sequence[Config]) -> None:
    """Raise ConfigError unless the configs can share a stack: AEVB runs that differ only in ``nz`` and
    ``seed``."""
    if not configs:
        raise ConfigError("a stack needs at least one config")
    for cfg in configs:
        if cfg.algorithm != "aevb":
            raise ConfigError(f"algorithm={cfg.algorithm!r}: only AEVB models can be stacked; train "
                              f"{cfg.algorithm} with the normal path")
        if cfg.devices * cfg.num_nodes > 1:
            raise ConfigError("a stack runs in one process on one device; set devices=1 and num_nodes=1")
    shared = [{k: v for k, v in cfg.identity().items() if k not in ("nz", "seed")} for cfg in configs]
    differ = sorted(k for k in shared[0] if any(s[k] != shared[0][k] for s in shared))
    if differ:
        values = "; ".join(f"{k}: {[s[k] for s in shared]}" for k in differ)
        raise ConfigError(f"stacked configs may differ only in nz and seed, but they differ in {values}")


class _Stream:
    """One model's training random stream and minibatch position, as ``SampleAxisModule`` keeps them."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.generator = torch.Generator(device).manual_seed(cfg.seed + 1)
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def indices(self, n: int, cfg: Config, device: torch.device) -> torch.Tensor:
        """The M training indices of the next minibatch: ``SampleAxisModule._indices`` for this model."""
        M = cfg.M
        if cfg.replacement:
            return torch.randint(n, (M,), device=device, generator=self.generator)
        if self.perm is None or self.pos + M > n:
            self.perm = torch.randperm(n, device=device, generator=self.generator)
            self.pos = 0
        self.pos += M
        return self.perm[self.pos - M:self.pos]


class StackedAEVB(nn.Module):
    """k AEVB models (Algorithm 1) of one sweep trained together; model j starts from and follows, up to
    floating-point rounding, the trajectory of ``AEVB(configs[j])`` trained alone on ``train_x``.

    ``encoder`` and ``decoder`` are the App. C networks with stacked layers, so ``state_dict`` names match
    ``AEVB``'s and ``unstack(j)`` loads into ``AEVB(configs[j])``. Parameters live on ``train_x``'s device.
    """

    def __init__(self, configs: Sequence[Config], train_x: torch.Tensor) -> None:
        super().__init__()
        check_stackable(configs)
        self.configs = tuple(configs)
        self.cfg = configs[0]  # everything but nz and seed, shared by the stack
        self.nz = max(cfg.nz for cfg in configs)
        models = [AEVB(cfg) for cfg in configs]  # the normal path's initialisation, copied into the stacks
        self._shapes = [{name: p.shape for name, p in m.named_parameters()} for m in models]
        self.encoder = stack_nets([m.encoder for m in models])
        self.decoder = stack_nets([m.decoder for m in models])
        self.to(train_x.device)
        self.train_x = train_x
        # The normal path's Adagrad (§5): prior 1/(N prior_sd^2) on weight matrices only, eps inside the
        # square root, warmup; all entries are elementwise, so one optimizer over the stacks is k optimizers.
        self.optimizer = StackedAdagrad(models[0].adagrad_groups(self), [cfg.lr or cfg.lr_candidates[0] for cfg in configs],
                                        self.cfg.adagrad_eps, self.cfg.adagrad_warmup, train_x.device)
        self.streams = [_Stream(cfg, train_x.device) for cfg in configs]
        self.samples = 0

    @property
    def k(self) -> int:
        return len(self.configs)

    def bound(self, x: torch.Tensor, eps: torch.Tensor, estimator: str | None = None) -> torch.Tensor:
        """The SGVB bound per model and datapoint, (k, N), for x (k, N, D) and eps (L, k, N, max Nz), eps
        zero in padded dimensions: estimator A (eq. 6) or B (eq. 7, eq. 10), the config's by default."""
        return elbo(x, self.encoder, self.decoder, estimator or self.cfg.estimator, len(eps), eps=eps)

    def minibatch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each model's minibatch (k, M, D) and noise (L, k, M, max Nz), drawn from its own generator in the
        normal path's order and shapes: indices, dynamic binarization if configured, eps (L, M, Nz_j)."""
        cfg, device = self.cfg, self.train_x.device
        idx = torch.stack([s.indices(len(self.train_x), cfg, device) for s in self.streams])
        return self._binarize_and_noise(self.train_x[idx], [s.generator for s in self.streams], cfg.L)

    def _binarize_and_noise(self, x: torch.Tensor, generators: Sequence[torch.Generator],
                            L: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For each model j, from ``generators[j]`` in this order: the dynamic binarization of x[j] if configured,
        then eps of shape (L, n, Nz_j), zero-padded into eps (L, k, n, max Nz)."""
        if self.cfg.binarize == "dynamic":
            x = torch.stack([torch.bernoulli(xj, generator=g) for xj, g in zip(x, generators, strict=True)])
        eps = torch.zeros(L, self.k, x.shape[1], self.nz, device=x.device)
        for j, (cfg, g) in enumerate(zip(self.configs, generators, strict=True)):
            eps[:, j, :, :cfg.nz] = torch.randn((L, x.shape[1], cfg.nz), device=x.device, generator=g)
        return x, eps

    def train_steps(self, steps: int) -> None:
        """``steps`` iterations of Algorithm 1 for every model: minibatch, noise, gradient of eq. (8) plus the
        prior, Adagrad. The loss is the sum of the k models' losses, so model j's gradient is its own."""
        params = list(self.parameters())
        M = self.cfg.M
        for _ in range(steps):
            x, eps = self.minibatch()
            loss = -self.bound(x, eps).sum() / M
            for p in params:
                p.grad = None
            loss.backward()
            self.optimizer.step()
        self.samples += steps * M

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, generators: Sequence[torch.Generator]) -> list[float]:
        """Each model's average lower bound per datapoint over all of ``x`` (estimator B, L = 1), in batches of
        ``eval_batch``: ``SampleAxisModule.evaluate`` for every model, model j drawing from ``generators[j]``."""
        total = torch.zeros(self.k, device=x.device, dtype=torch.float64)
        for chunk in x.split(self.cfg.eval_batch):
            xs, eps = self._binarize_and_noise(chunk.expand(self.k, *chunk.shape), generators, 1)
            total += self.bound(xs, eps, "B").sum(-1, dtype=torch.float64)
        return [float(t) / len(x) for t in total]

    def eval_generators(self) -> list[torch.Generator]:
        """The generators the normal path evaluates with at the current sample count (seed * 1_000_003 +
        samples, ``SampleAxisModule._eval_generator``)."""
        return [torch.Generator(self.train_x.device).manual_seed(cfg.seed * 1_000_003 + self.samples)
                for cfg in self.configs]

    def _slice(self, j: int, name: str) -> tuple[Any, ...]:
        return (j, *(slice(0, n) for n in self._shapes[j][name]))

    def unstack(self, j: int) -> dict[str, torch.Tensor]:
        """Model j's parameters without padding, as a state dict that loads into ``AEVB(configs[j])``."""
        return {name: p.detach()[self._slice(j, name)].clone() for name, p in self.named_parameters()}

    def model_state(self, j: int) -> dict[str, Any]:
        """Model j's whole training state, unpadded: parameters, Adagrad sums (by parameter name), Adagrad step
        count and step size, random stream and minibatch position."""
        opt, stream = self.optimizer, self.streams[j]
        sums = {name: opt.state[p]["sum"][self._slice(j, name)].clone()
                for name, p in self.named_parameters() if "sum" in opt.state[p]}
        return dict(params=self.unstack(j), sums=sums, step=opt.param_groups[0]["step"], lr=opt.lr_values[j],
                    rng=stream.generator.get_state(), perm=None if stream.perm is None else stream.perm.clone(),
                    pos=stream.pos)

    @torch.no_grad()
    def load_model_state(self, j: int, state: dict[str, Any]) -> None:
        """Put ``model_state``'s result into slot j. Every model of a stack shares the Adagrad step count."""
        opt, stream = self.optimizer, self.streams[j]
        for name, p in self.named_parameters():
            p[self._slice(j, name)] = state["params"][name]
            # a model that has not stepped yet has no sums: its accumulator starts again at eps
            opt.accumulator(p, self.cfg.adagrad_eps)[self._slice(j, name)] = state["sums"].get(name, self.cfg.adagrad_eps)
        for group in opt.param_groups:
            group["step"] = state["step"]
        opt.set_model_lr(j, state["lr"])
        stream.generator.set_state(state["rng"])
        stream.perm = None if state["perm"] is None else state["perm"].to(self.train_x.device)
        stream.pos = state["pos"]
