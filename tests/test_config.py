import dataclasses
import re
import types
from dataclasses import dataclass, field, fields
from typing import Annotated, Literal, Union, get_args, get_origin, get_type_hints

import pytest
import yaml

from vae.config import (
    CHOICES,
    DATASET_DEFAULTS,
    EXECUTION_KEYS,
    FIELDS,
    GROUPS,
    MAX_TRAIN,
    Bounds,
    Config,
    ConfigError,
    load_sweep,
    make_config,
    migrate,
    parse_overrides,
)
from vae.runs.folder import RunFolder
from vae.runs.train import check_same_config


def test_defaults_are_the_paper_settings():
    cfg = make_config({})
    assert (cfg.M, cfg.L, cfg.estimator, cfg.init_std, cfg.prior_sd) == (100, 1, "B", 0.01, 1.0)
    assert cfg.lr is None and cfg.lr_candidates == (0.01, 0.02, 0.1)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"n_z": 3}, "unknown config key 'n_z' (did you mean 'nz'?)"),
        ({"nzz": 3, "lrr": 1}, "unknown config keys 'lrr' (did you mean 'lr'?), 'nzz' (did you mean 'nz'?)"),
        ({"samples": 10}, "unknown config key 'samples' (samples is now budget)"),
        ({"qqq": 1}, "unknown config key 'qqq'; the keys and their defaults: docs/protocol.md"),
    ],
)
def test_an_unknown_key_is_named_with_the_key_it_most_likely_means(values, message):
    """One short line, not the list of every key."""
    with pytest.raises(ConfigError) as err:
        make_config(values)
    assert str(err.value) == message and str(list(FIELDS)) not in str(err.value)


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"nz": "three"}, "nz must be a number"),
        ({"nz": 2.5}, "nz must be a whole number"),
        ({"replacement": "yes"}, "replacement must be true or false"),
        ({"estimator": "C"}, "choose one of ['A', 'B']"),
        ({"decoder": "poisson"}, "choose one of ['bernoulli'"),
        ({"nz": 0}, "nz=0 must lie in (0, 10000]"),
        ({"M": -5}, "M=-5 must be a positive number"),
        ({"lr": 0.0}, "lr=0.0 must be positive"),
        ({"lr_candidates": [0.1, -1]}, "lr_candidates"),
        ({"budget": 1000, "eval_start": 100000}, "below the first evaluation point"),
        ({"budget": 200000, "lr_select_samples": 300000}, "exceeds the budget"),
        ({"n_train": 60000}, "exceeds the 50000"),
    ],
)
def test_bad_values_are_refused_with_the_key(values, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        make_config(values)
    assert fragment in str(err.value)


def test_numbers_in_scientific_notation_are_accepted_for_integers():
    assert make_config(parse_overrides(["budget=1e6"])).budget == 1_000_000
    assert make_config(parse_overrides(["lr=null"])).lr is None


def test_sweep_expands_the_grid_and_applies_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: fig\nbase: {hidden: 50}\ngrid: {nz: [3, 5]}\n")
    sweep = load_sweep(path, {"budget": "2e5", "seed": 4})
    assert sweep.name == "fig" and [r.name for r in sweep.runs] == ["nz3-seed4", "nz5-seed4"]
    assert all(r.config.budget == 200000 and r.config.hidden == 50 for r in sweep.runs)
    assert [r.config.nz for r in load_sweep(path, {"nz": 7}).runs] == [7]


def test_identity_ignores_execution_settings():
    a, b = make_config({"budget": 1000000}), make_config({"budget": 100000000, "steps_per_call": 3})
    assert a.identity() == b.identity()
    assert make_config({"lr": 0.1}).identity() != a.identity()


def test_sweep_file_with_unknown_section_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nbase: {}\nsweep: {nz: [1]}\n")
    with pytest.raises(ConfigError, match="name, base and"):
        load_sweep(path)


# --- the rules come from the field types ---


def _base(hint):
    """A field's value type with Optional and Annotated stripped (tuple[...] kept)."""
    while True:
        if get_origin(hint) is Annotated:
            hint = get_args(hint)[0]
        elif get_origin(hint) in (Union, types.UnionType):  # Optional[X] and X | None
            hint = next(a for a in get_args(hint) if a is not type(None))
        else:
            return hint


HINTS = get_type_hints(Config, include_extras=True)
FLOAT_FIELDS = [k for k, h in HINTS.items() if _base(h) is float]


def test_choices_are_read_from_the_literal_types():
    literal = {k: get_args(_base(h)) for k, h in HINTS.items() if get_origin(_base(h)) is Literal}
    assert set(literal) == {
        "dataset",
        "binarize",
        "algorithm",
        "decoder",
        "estimator",
        "eval_spacing",
        "evaluation",
        "marginal_estimator",
        "marginal_bandwidth",
        "marginal_step_tuning",
        "mcem_counting",
        "matmul_precision",
        "accelerator",
        "wandb",
    }
    assert literal == CHOICES and CHOICES["estimator"] == ("A", "B")
    assert set(CHOICES["dataset"]) == set(DATASET_DEFAULTS) == set(MAX_TRAIN)
    for key, allowed in literal.items():
        with pytest.raises(ConfigError, match=re.escape(f"choose one of {list(allowed)}")):
            make_config({key: "no-such-choice"})
        assert all(
            getattr(
                make_config({key: a} if key != "algorithm" or a != "mcem" else {key: a, "evaluation": "marginal"}), key
            )
            == a
            for a in allowed
        )


def test_every_bounded_field_is_checked_from_its_annotation():
    checked = 0
    for key, hint in HINTS.items():
        marks = [m for h in (hint, *get_args(hint)) if get_origin(h) is Annotated for m in get_args(h)[1:]]
        for bounds in (m for m in marks if isinstance(m, Bounds)):
            low = bounds.gt if bounds.gt is not None else bounds.ge - 1 if bounds.ge is not None else None
            high = bounds.lt if bounds.lt is not None else bounds.le + 1 if bounds.le is not None else None
            for bad in (_base(hint)(v) for v in (low, high) if v is not None):
                with pytest.raises(ConfigError, match=re.escape(f"{key}={bad!r} must ")):
                    make_config({key: bad})
                checked += 1
    assert checked >= 33  # 27 positive fields (lr included), hmc_target and seed (two sides each), two >= 0


@dataclass(frozen=True)
class WithBeta(Config):
    """A config grown by one bounded objective field and one execution field, with no change to validate."""

    beta: Annotated[float, Bounds(gt=0, le=1)] = field(default=0.5, metadata={"group": "objective"})
    progress_bar: bool = field(default=False, metadata={"group": "execution"})


def test_a_new_bounded_field_is_checked_without_touching_validate():
    assert WithBeta(beta="0.25").beta == 0.25
    for bad, fragment in (
        (2.0, "beta=2.0 must lie in (0, 1]"),
        (0, "beta=0.0 must lie in (0, 1]"),
        ("x", "beta must be a number"),
        (float("nan"), "beta=nan must be a finite number"),
    ):
        with pytest.raises(ConfigError) as err:
            WithBeta(beta=bad)
        assert fragment in str(err.value)
    assert "beta" in WithBeta().identity() and "progress_bar" not in WithBeta().identity()


def test_identity_is_every_field_outside_the_execution_group():
    groups = {f.name: f.metadata["group"] for f in fields(Config)}
    assert set(groups.values()) <= set(GROUPS) and "execution" in GROUPS
    execution = {k for k, g in groups.items() if g == "execution"}
    assert EXECUTION_KEYS == execution and {"budget", "cuda_graphs", "devices", "tags"} <= execution
    cfg = make_config({})
    assert list(cfg.identity()) == [k for k in FIELDS if k not in execution]
    changed = {
        "budget": 10**9,
        "steps_per_call": 7,
        "cuda_graphs": False,
        "compile": False,
        "checkpoint_minutes": 1.5,
        "heartbeat_seconds": 5.0,
        "accelerator": "cpu",
        "devices": 2,
        "num_nodes": 2,
        "wandb": "disabled",
        "wandb_project": "p",
        "tags": ["t"],
    }
    assert set(changed) == execution
    assert make_config(changed).identity() == cfg.identity()


def test_cuda_graphs_is_an_execution_switch_on_by_default():
    assert make_config({}).cuda_graphs is True and make_config({"cuda_graphs": False}).cuda_graphs is False
    with pytest.raises(ConfigError, match="cuda_graphs must be true or false"):
        make_config({"cuda_graphs": "no"})


@pytest.mark.parametrize("key", FLOAT_FIELDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "nan", "inf"])
def test_non_finite_floats_are_refused_naming_the_key(key, bad):
    assert {"lr", "init_std", "pixel_scale", "decoder_logvar_floor", "hmc_target"} <= set(FLOAT_FIELDS)
    with pytest.raises(ConfigError, match=rf"^{key}=-?(nan|inf) must be a finite number$"):
        make_config({key: bad})


def test_non_finite_list_items_and_whole_numbers_are_refused():
    with pytest.raises(ConfigError, match=r"^lr_candidates\[1\]=inf must be a finite number$"):
        make_config({"lr_candidates": [0.1, float("inf")]})
    with pytest.raises(ConfigError, match=r"^budget=inf must be a finite number$"):
        make_config({"budget": float("inf")})
    with pytest.raises(ConfigError, match=r"^nz=nan must be a finite number$"):
        make_config({"nz": "nan"})


def test_numbers_too_large_for_a_float_are_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^budget='1e400' is too large to be a float$"):
        make_config(parse_overrides(["budget=1e400"]))
    with pytest.raises(ConfigError, match=r"^init_std is too large to be a float, got a 401-digit number$"):
        make_config({"init_std": 10**400})
    path = tmp_path / "s.yaml"
    path.write_text("name: big\nbase: {budget: 1e400}\n")
    with pytest.raises(ConfigError, match="budget='1e400' is too large"):
        load_sweep(path)
    path.write_text("name: big\nbase: {budget: 1.0e+400}\n")  # YAML reads this one as inf
    with pytest.raises(ConfigError, match=r"^budget=inf must be a finite number$"):
        load_sweep(path)


@pytest.mark.parametrize(
    "seed, ok", [(0, True), (2**32 - 1, True), ("1e6", True), (-1, False), (2**32, False), ("1e20", False)]
)
def test_seed_lies_in_0_to_2_pow_32_minus_1(seed, ok):
    """The evaluation generator is seeded seed * 1_000_003 + samples, which torch takes below 2**64."""
    if ok:
        assert make_config({"seed": seed}).seed == (seed if isinstance(seed, int) else int(float(seed)))
    else:
        with pytest.raises(ConfigError, match=re.escape("must lie in [0, 4294967295]")):
            make_config({"seed": seed})


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"hmc_target": 1.0}, "hmc_target=1.0 must lie in (0, 1)"),
        ({"adagrad_warmup": -1}, "adagrad_warmup=-1 must be >= 0"),
        ({"marginal_burnin": -1}, "marginal_burnin=-1 must be >= 0"),
        ({"n_train": 0}, "n_train=0 must be positive, or null for the dataset's default"),
        ({"lr_candidates": []}, "lr_candidates=[] must be a non-empty list"),
        ({"lr_candidates": [0.1, -1]}, "lr_candidates[1]=-1.0 must be a positive number"),
        ({"algorithm": "mcem"}, "needs evaluation=marginal"),
        ({"decoder": "gaussian", "binarize": "static"}, "binarize applies to the Bernoulli decoder only"),
        ({"devices": 4, "num_nodes": 2, "M": 7}, "ranks exceed the minibatch M=7"),
    ],
)
def test_bound_and_cross_field_messages(values, fragment):
    with pytest.raises(ConfigError) as err:
        make_config(values)
    assert fragment in str(err.value)


def test_configs_built_directly_are_checked_too():
    cfg = make_config({})
    with pytest.raises(ConfigError, match=r"nz=0 must lie in \(0, 10000\]"):
        dataclasses.replace(cfg, nz=0)
    assert dataclasses.replace(cfg, lr=0.05).lr == 0.05 and Config(nz="1e1").nz == 10


def test_bounds_markers_are_well_formed():
    assert Bounds(gt=0).need() == "be a positive number" and Bounds(ge=1, lt=5).need() == "lie in [1, 5)"
    for bad in ({}, {"gt": 0, "ge": 0}, {"lt": 1, "le": 1}, {"gt": float("nan")}):
        with pytest.raises(TypeError):
            Bounds(**bad)


def test_seeds_repeat_every_grid_point_counting_up_from_the_config_seed(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": {"seed": 4}, "grid": {"nz": [3, 5]}, "seeds": 2}))
    assert [r.name for r in load_sweep(path).runs] == ["nz3-seed4", "nz3-seed5", "nz5-seed4", "nz5-seed5"]
    assert [r.config.seed for r in load_sweep(path, {"seed": 0}, seeds=3).runs][:3] == [0, 1, 2]
    assert [r.name for r in load_sweep(path, seeds=1).runs] == ["nz3-seed4", "nz5-seed4"]
    with pytest.raises(ConfigError, match="seeds=0"):
        load_sweep(path, seeds=0)


def test_the_old_budget_key_is_read_from_sweep_files_and_set_with_a_one_line_note(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text("name: old\nbase: {samples: 2e5}\n")
    assert [r.config.budget for r in load_sweep(path).runs] == [200000]
    assert load_sweep(tmp_path / "s.yaml", {"samples": 3e5}).runs[0].config.budget == 300000
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 3 and all("samples is now called budget" in n for n in notes)
    path.write_text("name: old\nbase: {samples: 2e5, budget: 3e5}\n")
    with pytest.raises(ConfigError, match="give budget only"):
        load_sweep(path)
    with pytest.raises(ConfigError, match=r"samples is now budget"):
        make_config({"samples": 1000})


def stored_before_mcem_counting() -> dict:
    """An MCEM run's config.yaml as written before mcem_counting, running_every, count_per_datapoint,
    matmul_precision, App. D's bandwidth and step tuning, and the recognition head's keys, with the budget under
    its old name."""
    keys = (
        "mcem_counting",
        "marginal_bandwidth",
        "marginal_step_tuning",
        "running_every",
        "count_per_datapoint",
        "matmul_precision",
        "encoder_logvar_scale",
        "encoder_logvar_zero_init",
        "budget",
        "compile",
    )
    config = make_config(dict(algorithm="mcem", evaluation="marginal", n_train=1000, lr=0.1)).to_dict()
    return {k: v for k, v in config.items() if k not in keys} | {"samples": 30_000_000}


def test_an_older_config_is_migrated_by_named_rules_to_what_the_run_did_then():
    config, applied = migrate(stored_before_mcem_counting(), "config.yaml")
    assert config["mcem_counting"] == "msteps"  # MCEM counted the weight updates alone then, not today's default
    assert config["running_every"] is None and config["budget"] == 30_000_000 and "samples" not in config
    assert (config["marginal_bandwidth"], config["marginal_step_tuning"]) == ("scott", "batch")  # App. D's then
    assert config["compile"] == Config().compile  # an execution key: today's default
    assert applied == [
        "samples is now budget",
        "before mcem_counting",
        "before the running average",
        "before count_per_datapoint",
        "before the recognition head's settings",
        "before matmul_precision",
        "before marginal_bandwidth",
    ]
    aevb = {k: v for k, v in make_config({}).to_dict().items() if k != "mcem_counting"}
    assert migrate(aevb, "x")[0]["mcem_counting"] == Config().mcem_counting  # unused by AEVB


def test_an_older_config_missing_a_key_without_a_rule_is_refused():
    stored = {k: v for k, v in make_config({}).to_dict().items() if k != "prior_sd"}
    with pytest.raises(ConfigError, match=r"config\.yaml lacks prior_sd, which change results"):
        migrate(stored, "config.yaml")


def test_resuming_an_mcem_run_from_before_mcem_counting_with_todays_sweep_is_refused(tmp_path):
    """Today's default would put the run on another sample axis: the migrated value says what it trained with."""
    folder = RunFolder(tmp_path / "runs" / "s" / "m")
    folder.path.mkdir(parents=True)
    folder.config_file.write_text(yaml.safe_dump(stored_before_mcem_counting()))
    today = make_config(dict(algorithm="mcem", evaluation="marginal", n_train=1000, lr=0.1, running_every=None))
    with pytest.raises(ConfigError, match="mcem_counting: 'msteps' -> 'passes'"):
        check_same_config(folder, today)
    check_same_config(folder, make_config(dict(today.to_dict(), mcem_counting="msteps")))
