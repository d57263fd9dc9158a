import pytest

from vae.config import FIELDS, ConfigError, load_sweep, make_config, parse_overrides


def test_defaults_are_the_paper_settings():
    cfg = make_config({})
    assert (cfg.M, cfg.L, cfg.estimator, cfg.init_std, cfg.prior_sd) == (100, 1, "B", 0.01, 1.0)
    assert cfg.lr is None and cfg.lr_candidates == (0.01, 0.02, 0.1)


def test_unknown_key_names_the_key_and_the_allowed_keys():
    with pytest.raises(ConfigError) as err:
        make_config({"n_z": 3})
    assert "'n_z'" in str(err.value) and "nz" in str(err.value) and str(list(FIELDS)) in str(err.value)


@pytest.mark.parametrize("values, fragment", [
    ({"nz": "three"}, "nz must be a number"),
    ({"nz": 2.5}, "nz must be a whole number"),
    ({"replacement": "yes"}, "replacement must be true or false"),
    ({"estimator": "C"}, "choose one of ['A', 'B']"),
    ({"decoder": "poisson"}, "choose one of ['bernoulli'"),
    ({"nz": 0}, "nz=0 must be a positive number"),
    ({"M": -5}, "M=-5 must be a positive number"),
    ({"lr": 0.0}, "lr=0.0 must be positive"),
    ({"lr_candidates": [0.1, -1]}, "lr_candidates"),
    ({"samples": 1000, "eval_start": 100000}, "below the first evaluation point"),
    ({"samples": 200000, "lr_select_samples": 300000}, "exceeds the budget"),
    ({"n_train": 60000}, "exceeds the 50000"),
])
def test_bad_values_are_refused_with_the_key(values, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        make_config(values)
    assert fragment in str(err.value)


def test_numbers_in_scientific_notation_are_accepted_for_integers():
    assert make_config(parse_overrides(["samples=1e6"])).samples == 1_000_000
    assert make_config(parse_overrides(["lr=null"])).lr is None


def test_sweep_expands_the_grid_and_applies_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: fig\nbase: {hidden: 50}\ngrid: {nz: [3, 5]}\n")
    sweep = load_sweep(path, {"samples": "2e5", "seed": 4})
    assert sweep.name == "fig" and [r.name for r in sweep.runs] == ["nz3-seed4", "nz5-seed4"]
    assert all(r.config.samples == 200000 and r.config.hidden == 50 for r in sweep.runs)
    assert [r.config.nz for r in load_sweep(path, {"nz": 7}).runs] == [7]


def test_identity_ignores_execution_settings():
    a, b = make_config({"samples": 1000000}), make_config({"samples": 100000000, "steps_per_call": 3})
    assert a.identity() == b.identity()
    assert make_config({"lr": 0.1}).identity() != a.identity()


def test_sweep_file_with_unknown_section_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nbase: {}\nsweep: {nz: [1]}\n")
    with pytest.raises(ConfigError, match="name, base and"):
        load_sweep(path)
