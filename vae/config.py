"""Run configuration: one flat, frozen dataclass whose field types carry the rules; loaded from YAML.

A config fully determines a run. Each field's type says what it accepts (``Literal[...]``: the choices;
``Annotated[..., Bounds(...)]``: the range; floats must be finite) and its ``group`` (field metadata, one of
``GROUPS``) what it configures. Every group but ``execution`` defines the mathematics of a run
(``Config.identity``). Sweep files under ``experiments/`` hold a ``base`` config and a ``grid`` of values to
expand (e.g. ``nz: [3, 5, 10, 20, 200]`` for Figure 2). Where the paper is silent the default follows the
evidence of the authors' code; each such field says so in its comment.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """A config that cannot describe a valid run; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Bounds:
    """The range of a numeric field, ``Annotated[int, Bounds(gt=0)]``: > gt, >= ge, < lt, <= le."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def __post_init__(self) -> None:
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if not given or (self.gt is not None and self.ge is not None) or (self.lt is not None and self.le is not None):
            raise TypeError(f"Bounds{given}: give one lower (gt or ge) and/or one upper (lt or le) bound")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in given.values()):
            raise TypeError(f"Bounds{given}: bounds are finite numbers")

    def holds(self, value: float) -> bool:
        return (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.lt is None or value < self.lt)
            and (self.le is None or value <= self.le)
        )

    def need(self, nullable: bool = False) -> str:
        """What a value must do, as in "nz=0 must be a positive number" ("positive" where null is allowed)."""
        if self == Bounds(gt=0):
            return "be positive" if nullable else "be a positive number"
        low = f"({self.gt}" if self.gt is not None else f"[{self.ge}" if self.ge is not None else None
        high = f"{self.lt})" if self.lt is not None else f"{self.le}]" if self.le is not None else None
        if low and high:
            return f"lie in {low}, {high}"
        if low:
            return f"be {'>' if low[0] == '(' else '>='} {low[1:]}"
        assert high is not None  # __post_init__ refuses Bounds without a bound
        return f"be {'<' if high[-1] == ')' else '<='} {high[:-1]}"

    def check(self, key: str, value: Any, null: str | None) -> None:
        if not self.holds(value):
            raise ConfigError(f"{key}={value!r} must {self.need(null is not None)}{null or ''}")


@dataclass(frozen=True)
class NonEmpty:
    """A list field that needs at least one item: ``Annotated[tuple[float, ...], NonEmpty()]``."""

    def check(self, key: str, value: Any, null: str | None) -> None:
        if not value:
            raise ConfigError(f"{key}={list(value)} must be a non-empty list")


PositiveInt = Annotated[int, Bounds(gt=0)]
PositiveFloat = Annotated[float, Bounds(gt=0)]

GROUPS: dict[str, str] = {  # group -> what its fields configure
    "data": "the training and test images",
    "model": "the encoder and decoder MLPs (App. C)",
    "objective": "the estimator of the variational lower bound (§2.3, eq. 6-8)",
    "optimizer": "Adagrad (§5)",
    "mcem": "Monte Carlo EM (App. E)",
    "evaluation": "when and how the bound and the marginal likelihood are measured (Fig. 2, Fig. 3, App. D)",
    "seed": "the run's random streams: initialisation, minibatches, noise",
    "precision": "the floating-point arithmetic of the matrix products on a CUDA device",
    "execution": "how long and how a run is carried out; never changes the mathematics (a larger budget "
    "only extends the curve, devices > 1 changes only floating-point summation order), so it "
    "may change on resume",
}


def _in(group: str, default: Any, *, null: str = "") -> Any:
    """A field of ``group``; ``null`` says what a null value means, for messages."""
    if group not in GROUPS:
        raise TypeError(f"unknown config group {group!r}; groups: {list(GROUPS)}")
    return field(default=default, metadata={"group": group, "null": null})


@dataclass(frozen=True)
class Config:
    """One run: flat fields (``cfg.nz``), each typed, bounded and grouped; see the module docstring."""

    dataset: Literal["mnist", "frey"] = _in("data", "mnist")
    # training-set size; null = the dataset's default (DATASET_DEFAULTS). MNIST: the first n_train of the 50k
    # training split (Fig. 3 uses 1000). Frey: the first n_train of a shuffle (split_seed), the rest is test.
    n_train: PositiveInt | None = _in("data", None, null="for the dataset's default")
    # the Frey Face shuffle (the paper states no split)
    split_seed: Annotated[int, Bounds(ge=0, le=2**63 - 1)] = _in("data", 0)
    # none: grey levels with the Bernoulli likelihood (authors' choice) | dynamic | static
    binarize: Literal["none", "dynamic", "static"] = _in("data", "none")
    # the fixed draw used by binarize=static
    binarize_seed: Annotated[int, Bounds(ge=0, le=2**63 - 1)] = _in("data", 0)
    # grey level = byte / pixel_scale; null = the dataset's default
    pixel_scale: PositiveFloat | None = _in("data", None, null="for the dataset's default")

    # mcem: Monte Carlo EM (App. E; no encoder)
    algorithm: Literal["aevb", "wakesleep", "mcem"] = _in("model", "aevb")
    nz: Annotated[int, Bounds(gt=0, le=10_000)] = _in("model", 20)  # the bounds keep a typo from allocating
    hidden: Annotated[int, Bounds(gt=0, le=100_000)] = _in("model", 500)  # terabytes; the paper's largest: 200, 500
    decoder: Literal["bernoulli", "gaussian", "gaussian-sigmoid-mean"] = _in("model", "bernoulli")
    # "N(0, 0.01)" read as a standard deviation (the authors' init_w(std=1e-2))
    init_std: PositiveFloat = _in("model", 0.01)
    # Gaussian decoder only: smooth floor on log sigma^2 (log of 1/(12*256^2), the variance of one grey
    # level's quantization noise), so a collapsing variance cannot make the density infinite; null = none
    decoder_logvar_floor: float | None = _in("model", -13.3, null="for none")
    # the encoder's log-variance head: its output times encoder_logvar_scale, and with encoder_logvar_zero_init
    # its weights and bias start at zero. The paper's eq. (12) is the plain head (1.0, false); the authors'
    # wake-sleep recognition model scales it by 0.1 and starts it at zero
    encoder_logvar_scale: PositiveFloat = _in("model", 1.0)
    encoder_logvar_zero_init: bool = _in("model", False)

    estimator: Literal["A", "B"] = _in("objective", "B")  # A: generic Monte Carlo (eq. 6) | B: analytic KL (eq. 7)
    L: PositiveInt = _in("objective", 1)  # samples of z per datapoint
    M: PositiveInt = _in("objective", 100)  # minibatch size
    replacement: bool = _in("objective", True)  # minibatches drawn with replacement, as in the authors' code
    # MAP prior N(0, prior_sd^2 I) on weight matrices, scaled by M/N (§5)
    prior_sd: PositiveFloat = _in("objective", 1.0)

    # Adagrad global step size; null = pick from lr_candidates
    lr: PositiveFloat | None = _in("optimizer", None, null="to pick it from lr_candidates")
    lr_candidates: Annotated[tuple[PositiveFloat, ...], NonEmpty()] = _in("optimizer", (0.01, 0.02, 0.1))
    lr_select_samples: PositiveInt = _in("optimizer", 100000)  # "first few iterations" used to pick the step size
    adagrad_eps: PositiveFloat = _in("optimizer", 1e-8)  # inside the square root, as in the authors' wzoptim.py
    # steps that only accumulate squared gradients (authors' code)
    adagrad_warmup: Annotated[int, Bounds(ge=0)] = _in("optimizer", 100)

    # Monte Carlo EM (App. E): per iteration one HMC transition of every training datapoint's persistent
    # chain, then mcem_msteps full-batch Adagrad steps
    mcem_leapfrog: PositiveInt = _in("mcem", 10)  # App. E: 10 leapfrog steps
    mcem_msteps: PositiveInt = _in("mcem", 5)  # App. E: 5 weight updates
    # training samples evaluated per iteration: "passes" counts every full pass over the data, the leapfrog
    # gradients and the weight updates, (mcem_leapfrog + mcem_msteps) * n_train, which is how Figure 3 counts
    # (its first N_train = 50000 point is at 15 * 50000); "msteps" counts the weight updates alone
    mcem_counting: Literal["passes", "msteps"] = _in("mcem", "passes")
    # App. E: step size tuned toward 90% acceptance
    hmc_target: Annotated[float, Bounds(gt=0, lt=1)] = _in("mcem", 0.9)
    hmc_step_size: PositiveFloat = _in("mcem", 0.01)  # initial HMC step size (authors' code)

    # log: eval_per_decade points per decade (Fig. 2) | linear: every eval_every (Fig. 3)
    eval_spacing: Literal["log", "linear"] = _in("evaluation", "log")
    # training samples counted per datapoint of a minibatch, the x-axis of Figures 2 and 3: 1 as the paper
    # defines it; 5 reads the Frey Face axis as a counter that advanced 5 per datapoint (its curves start at
    # x = 500 with M = 100). Budgets, evaluation points and lr_select_samples are on the counted axis
    count_per_datapoint: PositiveInt = _in("evaluation", 1)
    eval_start: PositiveInt = _in("evaluation", 100_000)  # first evaluation point
    eval_per_decade: PositiveInt = _in("evaluation", 10)  # log-spaced evaluation points per decade
    eval_every: PositiveInt = _in("evaluation", 2_000_000)  # linear spacing: samples between evaluation points
    eval_batch: PositiveInt = _in("evaluation", 10000)  # datapoints per no-grad evaluation batch
    # train/running_elbo: every running_every samples, the average of the minibatch bounds (the objective
    # without the weight prior) of the iterations since the last one, as the paper's train curve was logged
    # (the authors' loop_va hook); the default is the spacing of the paper's MNIST evaluations, 1.9-2.6e5
    # samples; null = not logged. AEVB and wake-sleep only (MCEM has no minibatch bound)
    running_every: PositiveInt | None = _in("evaluation", 250_000, null="to log no running average")
    # elbo: the bound on the full train and test sets (Fig. 2) | marginal: also log p(x) on the first
    # marginal_points of each set (Fig. 3, App. D); MCEM has no encoder, hence no bound, and needs marginal
    evaluation: Literal["elbo", "marginal"] = _in("evaluation", "elbo")
    # hmc: App. D (HMC samples, KDE, harmonic mean) | is: importance sampling
    marginal_estimator: Literal["hmc", "is"] = _in("evaluation", "hmc")
    marginal_points: PositiveInt = _in("evaluation", 1000)  # App. E: the first 1000 train and test datapoints
    # App. E: 50 posterior samples per datapoint (half fit q(z), half estimate)
    marginal_samples: PositiveInt = _in("evaluation", 50)
    marginal_leapfrog: PositiveInt = _in("evaluation", 4)  # App. E: 4 leapfrog steps per HMC transition
    # HMC transitions before sampling (not stated in the paper)
    marginal_burnin: Annotated[int, Bounds(ge=0)] = _in("evaluation", 100)
    # the bandwidth of App. D's KDE q(z) (not stated in the paper): scott, Scott's rule | validated, the
    # author's default (anglepy's kde2): the best of ten multiples of Scott's factor on a split of the fit half
    marginal_bandwidth: Literal["scott", "validated"] = _in("evaluation", "scott")
    # the HMC step size of App. D's chains (not stated in the paper): batch, one for all chains, tuned on their
    # mean acceptance as in the author's 2013 code | chain, one per chain, tuned on its own acceptance (ours)
    marginal_step_tuning: Literal["batch", "chain"] = _in("evaluation", "batch")
    marginal_is_k: PositiveInt = _in("evaluation", 5000)  # importance samples per datapoint (marginal_estimator: is)

    # highest: float32 matrix products | tf32: the tensor cores' TF32 mode for float32 matrix products on CUDA
    # (10-bit mantissa inputs, float32 accumulation; faster, other numbers). Part of a run's identity; no
    # effect on the CPU
    matmul_precision: Literal["highest", "tf32"] = _in("precision", "highest")

    # initialisation, minibatches and noise; evaluation noise is seeded seed * 1_000_003 + samples (< 2**64)
    seed: Annotated[int, Bounds(ge=0, le=2**32 - 1)] = _in("seed", 0)

    # training samples evaluated (Fig. 2 x-axis) to train for; a larger budget continues the same run on resume
    budget: Annotated[int, Bounds(gt=0, le=10**12)] = _in("execution", 100_000_000)  # 10^4 times the paper's
    steps_per_call: PositiveInt = _in("execution", 50)  # optimizer steps per Lightning training_step
    # on CUDA, capture each block of steps_per_call optimizer steps as a CUDA graph and replay it; ignored on CPU
    cuda_graphs: bool = _in("execution", True)
    # on CUDA, run each iteration's arithmetic (forward, bounds, backward, Adagrad) as kernels fused by
    # torch.compile (inductor), the random draws outside them; false: eager kernels, the reference path.
    # Ignored on the CPU
    compile: bool = _in("execution", True)
    checkpoint_minutes: PositiveFloat = _in("execution", 10.0)
    # without a terminal, a progress line at most this often (on a terminal: a progress bar)
    heartbeat_seconds: PositiveFloat = _in("execution", 60.0)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = _in("execution", "auto")
    # data parallelism (Lightning DDP): processes per node and nodes. The global minibatch stays M, split
    # across the devices * num_nodes ranks (the first M mod ranks take one datapoint more)
    devices: PositiveInt = _in("execution", 1)
    num_nodes: PositiveInt = _in("execution", 1)
    wandb: Literal["offline", "online", "disabled"] = _in("execution", "offline")
    wandb_project: str = _in("execution", "aevb-reproduction")
    tags: tuple[str, ...] = _in("execution", ())

    def __post_init__(self) -> None:
        if isinstance(self.dataset, str) and self.dataset in DATASET_DEFAULTS:
            for key, value in DATASET_DEFAULTS[self.dataset].items():
                if getattr(self, key) is None:
                    object.__setattr__(self, key, value)
        hints = _hints(type(self))  # type: ignore[arg-type]  # mypy checks a class's instance __hash__ for Hashable
        for f in fields(self):  # each field against its own type, choices and bounds, in declaration order
            object.__setattr__(
                self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name], f.metadata.get("null", ""))
            )
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def identity(self) -> dict[str, Any]:
        """The keys that define the mathematics of a run: all but the execution group's, which may change on resume."""
        d = self.to_dict()
        return {f.name: d[f.name] for f in fields(self) if f.metadata.get("group") != "execution"}


DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {"n_train": 50000, "pixel_scale": 255.0},  # authors' 50k/10k/10k split, grey levels in [0, 1]
    "frey": {"n_train": 1600, "pixel_scale": 256.0},  # authors' loader divides by 256; 1600/365 as in nips14-ssl
}
MAX_TRAIN = {"mnist": 50000, "frey": 1964}


def validate(cfg: Config) -> None:
    """The rules that tie fields together; each field alone is checked against its type by ``_coerce``."""
    assert cfg.n_train is not None  # __post_init__ put the dataset's default in place of null
    if cfg.n_train > MAX_TRAIN[cfg.dataset]:
        raise ConfigError(
            f"n_train={cfg.n_train} exceeds the {MAX_TRAIN[cfg.dataset]} {cfg.dataset} images available for training"
        )
    if cfg.budget < cfg.eval_start:
        raise ConfigError(
            f"budget={cfg.budget} is below the first evaluation point eval_start={cfg.eval_start}; "
            "raise budget or lower eval_start"
        )
    if cfg.lr is None and cfg.lr_select_samples > cfg.budget:
        raise ConfigError(
            f"lr_select_samples={cfg.lr_select_samples} exceeds the budget={cfg.budget}; "
            "lower lr_select_samples or set lr"
        )
    if cfg.devices * cfg.num_nodes > cfg.M:
        raise ConfigError(
            f"devices * num_nodes = {cfg.devices * cfg.num_nodes} ranks exceed the minibatch M={cfg.M}: "
            "every rank needs at least one datapoint of each minibatch"
        )
    if cfg.algorithm == "mcem" and (cfg.evaluation != "marginal" or cfg.devices * cfg.num_nodes > 1):
        raise ConfigError(
            "algorithm=mcem has no encoder and runs full-batch iterations: it needs "
            "evaluation=marginal and a single device (devices=1, num_nodes=1)"
        )
    if not cfg.replacement and cfg.M > cfg.n_train:
        raise ConfigError(
            f"M={cfg.M} exceeds n_train={cfg.n_train}: without replacement a minibatch cannot hold more "
            "than the training set; lower M or set replacement=true"
        )
    if (
        cfg.lr is None
        and len(cfg.lr_candidates) > 1
        and cfg.algorithm != "mcem"
        and cfg.lr_select_samples <= cfg.adagrad_warmup * cfg.M * cfg.count_per_datapoint
    ):
        raise ConfigError(
            f"lr_select_samples={cfg.lr_select_samples} ends within the Adagrad warm-up "
            f"({cfg.adagrad_warmup} steps of M={cfg.M}), where no step size has moved the weights yet, "
            "so every candidate would score the same; raise lr_select_samples or lower adagrad_warmup"
        )
    if cfg.algorithm == "mcem" and cfg.count_per_datapoint != 1:
        raise ConfigError("algorithm=mcem counts its samples with mcem_counting; leave count_per_datapoint at 1")
    if cfg.decoder != "bernoulli" and cfg.binarize != "none":
        raise ConfigError("binarize applies to the Bernoulli decoder only")


def _coerce(key: str, value: Any, hint: Any, null: str = "", nullable: bool = False) -> Any:
    """Convert a YAML/CLI value to the field's type and check it against the type's choices and bounds,
    or raise naming the key; ``null`` says what null means where the type allows it."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        return _coerce(key, value, next(a for a in args if a is not type(None)), null, type(None) in args)
    if origin is Annotated:
        value = _coerce(key, value, args[0], null, nullable)
        for mark in args[1:]:
            if isinstance(mark, (Bounds, NonEmpty)):
                mark.check(key, value, (f", or null {null}" if null else ", or null") if nullable else None)
        return value
    if origin is Literal:
        if not any(type(value) is type(a) and value == a for a in args):
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, str):
            value = _number(key, value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} must be a finite number")
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not value.is_integer())
        ):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        _as_float(key, value)
        return int(value)
    if hint is float:
        if isinstance(value, str):
            value = _number(key, value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        value = _as_float(key, value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} must be a finite number")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint}")


def _as_float(key: str, value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        raise ConfigError(f"{key} is too large to be a float, got a {len(str(abs(value)))}-digit number") from None


def _number(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {text!r}") from None
    if math.isinf(value) and "inf" not in text.lower():
        raise ConfigError(f"{key}={text!r} is too large to be a float")
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


FIELDS = tuple(f.name for f in fields(Config))
GROUP_OF: dict[str, str] = {f.name: f.metadata["group"] for f in fields(Config)}
EXECUTION_KEYS = frozenset(k for k, g in GROUP_OF.items() if g == "execution")
# what a run logs besides its evaluations, which neither the model nor its curve depends on
LOGGING_KEYS = frozenset({"running_every"})
CHOICES: dict[str, tuple[Any, ...]] = {  # derived from the Literal types, e.g. CHOICES["estimator"] == ("A", "B")
    k: get_args(h) for k, h in _hints(Config).items() if get_origin(h) is Literal
}
if set(CHOICES["dataset"]) != set(DATASET_DEFAULTS) or set(CHOICES["dataset"]) != set(MAX_TRAIN):
    raise TypeError("Config.dataset's choices, DATASET_DEFAULTS and MAX_TRAIN must name the same datasets")


def make_config(values: dict[str, Any]) -> Config:
    """Build a Config from plain values; unknown keys and wrong types raise ConfigError."""
    check_keys(values)
    return Config(**values)


def check_keys(values: dict[str, Any], where: str = "") -> None:
    """Refuse the keys of ``values`` that are no config key, each with the key it most likely means (``nzz``:
    did you mean ``nz``?), in one line; ``where`` (a sweep file's base, --set) starts the line."""
    unknown = sorted(set(values) - set(FIELDS), key=str)
    if not unknown:
        return
    hints = [nearest_key(key) for key in unknown]
    named = ", ".join(f"{key!r} ({hint})" if hint else repr(key) for key, hint in zip(unknown, hints, strict=True))
    lost = "" if all(hints) else "; the keys and their defaults: docs/protocol.md"
    raise ConfigError(f"{where + ': ' if where else ''}unknown config key{'s' * (len(unknown) > 1)} {named}{lost}")


def nearest_key(key: Any) -> str:
    """``did you mean 'nz'?`` for ``nzz``, ``samples is now budget`` for a renamed key, else empty."""
    if key in RENAMED:
        return f"{key} is now {RENAMED[key]}"
    close = difflib.get_close_matches(str(key), FIELDS, n=1)
    return f"did you mean {close[0]!r}?" if close else ""


RENAMED = {"samples": "budget"}  # old name -> new name of a config key


def renamed_keys(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` (a sweep file's base or grid, or --set overrides) with old key names replaced by the new ones,
    and a one-line note on stderr for each."""
    out = {}
    for key, value in values.items():
        new = RENAMED.get(key, key)
        if new != key:
            if new in values:
                raise ConfigError(f"{where}: give {new} only ({key} is its old name)")
            print(f"note: {where}: the config key {key} is now called {new}; {key} is read as {new}", file=sys.stderr)
        out[new] = value
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings from the command line, values parsed as YAML (``lr=0.02``, ``lr=null``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            out[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item}: not a YAML value ({problem(e)}); quote it or fix the syntax") from None
    return out


def problem(e: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where."""
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{getattr(e, 'problem', None) or type(e).__name__}{where}"


@dataclass(frozen=True)
class Migration:
    """A named rule for a run's ``config.yaml`` written before ``keys`` existed: ``values`` gives, from the stored
    config, the values of the missing keys that reproduce what the run did then."""

    name: str
    keys: tuple[str, ...]
    values: Callable[[dict[str, Any]], dict[str, Any]]


def _by_default(name: str, *keys: str) -> Migration:
    """The rule of keys whose default is what the code did before they existed."""
    return Migration(name, keys, lambda old: {k: getattr(Config(), k) for k in keys})


MIGRATIONS: tuple[Migration, ...] = (
    # Figure 3 brought the marginal likelihood and MCEM; before, every run evaluated the bound on log-spaced points
    Migration(
        "before the marginal likelihood",
        ("evaluation", "eval_spacing"),
        lambda old: {"evaluation": "elbo", "eval_spacing": "log"},
    ),
    _by_default(
        "before Figure 3's settings",
        "eval_every",
        "marginal_estimator",
        "marginal_points",
        "marginal_samples",
        "marginal_leapfrog",
        "marginal_burnin",
        "marginal_is_k",
        "mcem_leapfrog",
        "mcem_msteps",
        "hmc_target",
        "hmc_step_size",
    ),
    # MCEM counted the weight updates alone (5 N per iteration) before mcem_counting
    Migration(
        "before mcem_counting",
        ("mcem_counting",),
        lambda old: {"mcem_counting": "msteps" if old.get("algorithm") == "mcem" else Config().mcem_counting},
    ),
    # no running average was logged before running_every
    Migration("before the running average", ("running_every",), lambda old: {"running_every": None}),
    _by_default("before count_per_datapoint", "count_per_datapoint"),
    _by_default("before the recognition head's settings", "encoder_logvar_scale", "encoder_logvar_zero_init"),
    _by_default("before matmul_precision", "matmul_precision"),
    # App. D's KDE used Scott's rule, and its chains one step size, before these keys
    Migration(
        "before marginal_bandwidth",
        ("marginal_bandwidth", "marginal_step_tuning"),
        lambda old: {"marginal_bandwidth": "scott", "marginal_step_tuning": "batch"},
    ),
)


def migrate(stored: dict[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """A stored run config (``where``: its file) in today's keys, and the names of the migrations applied: the
    renamed keys (``RENAMED``), then each rule of ``MIGRATIONS`` for its missing keys. Execution keys never
    change results, so a missing one takes today's default. A missing key that changes results and has no rule
    is refused (``ConfigError``): it is never filled with today's default."""
    config, applied = {}, []
    for key, value in stored.items():
        if key in RENAMED and RENAMED[key] not in stored:
            applied.append(f"{key} is now {RENAMED[key]}")
        config[RENAMED.get(key, key)] = value
    for rule in MIGRATIONS:
        missing = [k for k in rule.keys if k not in config]
        if missing:
            config |= {k: v for k, v in rule.values(config).items() if k in missing}
            applied.append(rule.name)
    unknown = [k for k in FIELDS if k not in config and GROUP_OF[k] != "execution"]
    if unknown:
        raise ConfigError(
            f"{where} lacks {', '.join(unknown)}, which change results, and no migration rule gives "
            "the value it was trained with; train it again in another results folder"
        )
    return config | {k: getattr(Config(), k) for k in FIELDS if k not in config}, applied


def stored_config(stored: dict[str, Any], where: str) -> Config:
    """The Config of a run's stored config (its ``config.yaml`` or a checkpoint's), migrated (``migrate``)."""
    return make_config(migrate(stored, where)[0])


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its name (unique within the sweep) and its config."""

    name: str
    config: Config


@dataclass(frozen=True)
class Sweep:
    name: str
    runs: tuple[RunSpec, ...]


MAX_SEEDS, MAX_RUNS = 1000, 10_000  # seeds per grid point, runs per sweep


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None, seeds: int | None = None) -> Sweep:
    """Expand a sweep file (``name``, ``base``, optional ``grid`` and ``seeds``) into runs, applying overrides to
    each. ``seeds`` (the argument, else the file's) repeats every grid point with that many seeds, counting up
    from the config's ``seed``; the runs are named ``<grid point>-seed<seed>``."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"experiment file {path} does not exist; the sweeps are in experiments/*.yaml") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give a sweep file, e.g. experiments/fig2_mnist_aevb.yaml") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path} is not a text file; give a sweep file, e.g. experiments/fig2_mnist_aevb.yaml"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read the experiment file {path} ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML ({problem(e)})") from None
    if not isinstance(doc, dict) or set(doc) - {"name", "base", "grid", "seeds"} or "name" not in doc:
        raise ConfigError(f"{path}: a sweep file is a mapping with the keys name, base and (optional) grid and seeds")
    seeds = seeds if seeds is not None else doc.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds={seeds!r}: the number of seeds per grid point is a whole number >= 1")
    if seeds > MAX_SEEDS:
        raise ConfigError(f"seeds={seeds:,d}: a sweep takes at most {MAX_SEEDS:,d} seeds per grid point")
    base, grid = doc.get("base") or {}, doc.get("grid") or {}
    if not isinstance(base, dict) or not isinstance(grid, dict):
        raise ConfigError(f"{path}: base and grid are mappings of config keys (base: {{nz: 20}}, grid: {{nz: [3, 5]}})")
    scalar = [k for k, v in grid.items() if not isinstance(v, list) or not v]
    if scalar:
        raise ConfigError(
            f"{path}: grid values are non-empty lists of values to sweep ({scalar[0]}: "
            f"{grid[scalar[0]]!r}); put a single value under base"
        )
    base, grid = renamed_keys(base, f"{path} base"), renamed_keys(grid, f"{path} grid")
    overrides = renamed_keys(dict(overrides or {}), "--set")
    for values, where in ((base, f"{path} base"), (grid, f"{path} grid"), (overrides, "--set")):
        check_keys(values, where)
    fixed = {k: v for k, v in overrides.items() if k not in grid}
    for key, value in overrides.items():
        if key in grid:
            grid[key] = value if isinstance(value, list) else [value]
    if seeds > 1 and "seed" in grid:
        raise ConfigError(f"{path}: seeds={seeds} and a grid over seed; give one of them")
    count = math.prod(len(v) for v in grid.values()) * seeds
    if count > MAX_RUNS:
        raise ConfigError(f"{path}: the grid and seeds make {count:,d} runs; a sweep has at most {MAX_RUNS:,d}")
    runs = []
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = {**base, **dict(zip(keys, combo, strict=True)), **fixed}
        first = make_config(values).seed
        label = "-".join(f"{k}{v}" for k, v in zip(keys, combo, strict=True) if k != "seed")
        for seed in range(first, first + seeds):
            cfg = make_config(values | {"seed": seed})
            runs.append(RunSpec(name=f"{label}-seed{cfg.seed}" if label else f"seed{cfg.seed}", config=cfg))
    return Sweep(name=str(doc["name"]), runs=tuple(runs))
