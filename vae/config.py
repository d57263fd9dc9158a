"""Run configuration: one typed dataclass, loaded from YAML, validated strictly.

A config fully determines a run. Sweep files under ``experiments/`` hold a ``base`` config and a ``grid``
of values to expand (e.g. ``nz: [3, 5, 10, 20, 200]`` for Figure 2). Where the paper is silent the
default follows the evidence in the paper digest; each such field says so in its comment.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A config that cannot describe a valid run; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Config:
    # --- data ---
    dataset: str = "mnist"  # mnist | frey
    # training-set size; null = the dataset's default (DATASET_DEFAULTS). MNIST: the first n_train of the 50k
    # training split (Fig. 3 uses 1000). Frey: the first n_train of a shuffle (split_seed), the rest is test.
    n_train: Union[int, None] = None
    split_seed: int = 0  # the Frey Face shuffle (the paper states no split)
    binarize: str = "none"  # none: grey levels with the Bernoulli likelihood (authors' choice) | dynamic | static
    binarize_seed: int = 0  # the fixed draw used by binarize=static
    pixel_scale: Union[float, None] = None  # grey level = byte / pixel_scale; null = the dataset's default
    # --- model (App. C) ---
    algorithm: str = "aevb"  # aevb | wakesleep | mcem (Monte Carlo EM, App. E; no encoder)
    nz: int = 20
    hidden: int = 500
    decoder: str = "bernoulli"  # bernoulli | gaussian | gaussian-sigmoid-mean
    init_std: float = 0.01  # "N(0, 0.01)" read as a standard deviation (digest §3.6)
    # Gaussian decoder only: smooth floor on log sigma^2 (log of 1/(12*256^2), the variance of one grey
    # level's quantization noise), so a collapsing variance cannot make the density infinite; null = none
    decoder_logvar_floor: Union[float, None] = -13.3
    # --- objective (§2.3, eq. 6-8) ---
    estimator: str = "B"  # A: generic Monte Carlo (eq. 6) | B: analytic KL (eq. 7)
    L: int = 1  # samples of z per datapoint
    M: int = 100  # minibatch size
    replacement: bool = True  # minibatches drawn with replacement, as in the authors' code
    prior_sd: float = 1.0  # MAP prior N(0, prior_sd^2 I) on weight matrices, scaled by M/N (§5)
    # --- optimizer (§5: Adagrad) ---
    lr: Union[float, None] = None  # Adagrad global step size; None = pick from lr_candidates
    lr_candidates: tuple[float, ...] = (0.01, 0.02, 0.1)
    lr_select_samples: int = 100000  # "first few iterations" used to pick the step size
    adagrad_eps: float = 1e-8  # inside the square root, as in the authors' wzoptim.py
    adagrad_warmup: int = 100  # steps that only accumulate squared gradients (authors' code)
    # --- Monte Carlo EM (App. E): per iteration one HMC transition of every training datapoint's persistent
    # chain, then mcem_msteps full-batch Adagrad steps; an iteration counts mcem_msteps * n_train samples
    mcem_leapfrog: int = 10  # App. E: 10 leapfrog steps
    mcem_msteps: int = 5  # App. E: 5 weight updates
    hmc_target: float = 0.9  # App. E: step size tuned toward 90% acceptance
    hmc_step_size: float = 0.01  # initial HMC step size (authors' code)
    # --- schedule and evaluation ---
    samples: int = 100_000_000  # budget: training samples evaluated (Fig. 2 x-axis)
    eval_spacing: str = "log"  # log: eval_per_decade points per decade (Fig. 2) | linear: every eval_every (Fig. 3)
    eval_start: int = 100_000  # first evaluation point
    eval_per_decade: int = 10  # log-spaced evaluation points per decade
    eval_every: int = 2_000_000  # linear spacing: samples between evaluation points
    eval_batch: int = 10000  # datapoints per no-grad evaluation batch
    # elbo: the bound on the full train and test sets (Fig. 2) | marginal: also log p(x) on the first
    # marginal_points of each set (Fig. 3, App. D); MCEM has no encoder, hence no bound, and needs marginal
    evaluation: str = "elbo"
    marginal_estimator: str = "hmc"  # hmc: App. D (HMC samples, KDE, harmonic mean) | is: importance sampling
    marginal_points: int = 1000  # App. E: the first 1000 train and test datapoints
    marginal_samples: int = 50  # App. E: 50 posterior samples per datapoint (half fit q(z), half estimate)
    marginal_leapfrog: int = 4  # App. E: 4 leapfrog steps per HMC transition
    marginal_burnin: int = 100  # HMC transitions before sampling (not stated in the paper)
    marginal_is_k: int = 5000  # importance samples per datapoint (marginal_estimator: is)
    seed: int = 0
    # --- execution (never changes the mathematics; devices > 1 changes only floating-point summation order) ---
    steps_per_call: int = 50  # optimizer steps per Lightning training_step
    checkpoint_minutes: float = 10.0
    accelerator: str = "auto"
    # data parallelism (Lightning DDP): processes per node and nodes. The global minibatch stays M, split
    # across the devices * num_nodes ranks (the first M mod ranks take one datapoint more)
    devices: int = 1
    num_nodes: int = 1
    wandb: str = "offline"  # offline | online | disabled
    wandb_project: str = "aevb-reproduction"
    tags: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.dataset in DATASET_DEFAULTS:
            for key, value in DATASET_DEFAULTS[self.dataset].items():
                if getattr(self, key) is None:
                    object.__setattr__(self, key, value)
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def identity(self) -> dict[str, Any]:
        """The keys that define the mathematics of a run; the others may change on resume."""
        return {k: v for k, v in self.to_dict().items() if k not in EXECUTION_KEYS}


EXECUTION_KEYS = frozenset(
    {"samples", "steps_per_call", "checkpoint_minutes", "accelerator", "devices", "num_nodes", "wandb",
     "wandb_project", "tags"}
)

DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {"n_train": 50000, "pixel_scale": 255.0},  # authors' 50k/10k/10k split, grey levels in [0, 1]
    "frey": {"n_train": 1600, "pixel_scale": 256.0},  # authors' loader divides by 256; 1600/365 as in nips14-ssl
}
MAX_TRAIN = {"mnist": 50000, "frey": 1964}

CHOICES: dict[str, tuple[Any, ...]] = {
    "dataset": tuple(DATASET_DEFAULTS),
    "binarize": ("none", "dynamic", "static"),
    "algorithm": ("aevb", "wakesleep", "mcem"),
    "eval_spacing": ("log", "linear"),
    "evaluation": ("elbo", "marginal"),
    "marginal_estimator": ("hmc", "is"),
    "decoder": ("bernoulli", "gaussian", "gaussian-sigmoid-mean"),
    "estimator": ("A", "B"),
    "accelerator": ("auto", "cpu", "gpu", "cuda", "mps"),
    "wandb": ("offline", "online", "disabled"),
}

POSITIVE = ("n_train", "nz", "hidden", "L", "M", "init_std", "prior_sd", "samples", "eval_start",
            "eval_per_decade", "eval_batch", "steps_per_call", "pixel_scale", "adagrad_eps",
            "checkpoint_minutes", "lr_select_samples", "devices", "num_nodes", "mcem_leapfrog", "mcem_msteps",
            "hmc_step_size", "eval_every", "marginal_points", "marginal_samples", "marginal_leapfrog",
            "marginal_is_k")


def validate(cfg: Config) -> None:
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"{key}={getattr(cfg, key)!r} is not allowed; choose one of {list(allowed)}")
    for key in POSITIVE:
        value = getattr(cfg, key)
        if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(f"{key}={value!r} must be a positive number")
    if cfg.adagrad_warmup < 0:
        raise ConfigError(f"adagrad_warmup={cfg.adagrad_warmup} must be >= 0")
    if cfg.lr is not None and not cfg.lr > 0:
        raise ConfigError(f"lr={cfg.lr!r} must be positive, or null to pick it from lr_candidates")
    if not cfg.lr_candidates or any(not c > 0 for c in cfg.lr_candidates):
        raise ConfigError(f"lr_candidates={list(cfg.lr_candidates)} must be a non-empty list of positive step sizes")
    if cfg.n_train > MAX_TRAIN[cfg.dataset]:
        raise ConfigError(f"n_train={cfg.n_train} exceeds the {MAX_TRAIN[cfg.dataset]} {cfg.dataset} images "
                          "available for training")
    if cfg.samples < cfg.eval_start:
        raise ConfigError(f"samples={cfg.samples} is below the first evaluation point eval_start={cfg.eval_start}; "
                          "raise samples or lower eval_start")
    if cfg.lr is None and cfg.lr_select_samples > cfg.samples:
        raise ConfigError(f"lr_select_samples={cfg.lr_select_samples} exceeds the budget samples={cfg.samples}; "
                          "lower lr_select_samples or set lr")
    if cfg.devices * cfg.num_nodes > cfg.M:
        raise ConfigError(f"devices * num_nodes = {cfg.devices * cfg.num_nodes} ranks exceed the minibatch M={cfg.M}: "
                          "every rank needs at least one datapoint of each minibatch")
    if not 0 < cfg.hmc_target < 1 or cfg.marginal_burnin < 0:
        raise ConfigError("hmc_target must lie in (0, 1) and marginal_burnin be >= 0")
    if cfg.algorithm == "mcem" and (cfg.evaluation != "marginal" or cfg.devices * cfg.num_nodes > 1):
        raise ConfigError("algorithm=mcem has no encoder and runs full-batch iterations: it needs "
                          "evaluation=marginal and a single device (devices=1, num_nodes=1)")
    if cfg.decoder != "bernoulli" and cfg.binarize != "none":
        raise ConfigError("binarize applies to the Bernoulli decoder only")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert a YAML/CLI value to the field's type, or raise naming the key."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        return _coerce(key, value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(key, v, args[0]) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, str):
            value = _number(key, value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, str):
            value = _number(key, value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")


def _number(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {text!r}") from None


_HINTS = get_type_hints(Config)
FIELDS = tuple(f.name for f in fields(Config))


def make_config(values: dict[str, Any]) -> Config:
    """Build a Config from plain values; unknown keys and wrong types raise ConfigError."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; allowed keys: {list(FIELDS)}")
    return Config(**{k: _coerce(k, v, _HINTS[k]) for k, v in values.items()})


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings from the command line, values parsed as YAML (``lr=0.02``, ``lr=null``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like key=value")
        out[key.strip()] = yaml.safe_load(text)
    return out


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its name (unique within the sweep) and its config."""

    name: str
    config: Config


@dataclass(frozen=True)
class Sweep:
    name: str
    runs: tuple[RunSpec, ...]


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> Sweep:
    """Expand a sweep file (``name``, ``base``, optional ``grid``) into runs, applying overrides to each."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    if not isinstance(doc, dict) or set(doc) - {"name", "base", "grid"} or "name" not in doc:
        raise ConfigError(f"{path}: a sweep file has the keys name, base and (optional) grid")
    base = dict(doc.get("base") or {})
    grid = dict(doc.get("grid") or {})
    overrides = dict(overrides or {})
    fixed = {k: v for k, v in overrides.items() if k not in grid}
    for key, value in overrides.items():
        if key in grid:
            grid[key] = value if isinstance(value, list) else [value]
    runs = []
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = {**base, **dict(zip(keys, combo)), **fixed}
        cfg = make_config(values)
        label = "-".join(f"{k}{v}" for k, v in zip(keys, combo))
        runs.append(RunSpec(name=f"{label}-seed{cfg.seed}" if label else f"seed{cfg.seed}", config=cfg))
    return Sweep(name=str(doc["name"]), runs=tuple(runs))
