"""W&B as its users set it: ``WANDB_MODE`` (disabled, offline, online) sets every run's ``wandb`` key over the
sweep file, ``--set wandb=`` wins over it, and an offline run writes its W&B files quietly, without W&B's
system-stats sampler."""

import pytest
import yaml
from helpers import train_args

from vae.__main__ import main
from vae.config import make_config
from vae.runs.folder import RunFolder
from vae.runs.loggers import run_loggers

SWEEP = {
    "name": "w",
    "base": {
        "dataset": "mnist",
        "hidden": 10,
        "nz": 2,
        "n_train": 1000,
        "budget": 1000,
        "eval_start": 1000,
        "lr": 0.1,
        "adagrad_warmup": 1,
        "wandb": "offline",
    },
}


def train(tmp_path, data_root, *overrides: str) -> RunFolder:
    sweep, results = tmp_path / "w.yaml", tmp_path / "results"
    sweep.write_text(yaml.safe_dump(SWEEP))
    assert (
        main(
            [
                *train_args(sweep, results, data_root),
                *(("--set", *overrides) if overrides else ()),
            ]
        )
        == 0
    )
    return RunFolder(results / "runs" / "w" / "seed0")


@pytest.mark.parametrize(
    "env, overrides, wandb",
    [
        ("disabled", (), "disabled"),
        ("offline", ("wandb=disabled",), "disabled"),
        ("dryrun", (), "offline"),
        (None, (), "offline"),
    ],
    ids=["env-disabled", "set-wins", "env-dryrun", "sweep-file"],
)
def test_wandb_mode_sets_the_runs_wandb_key_and_set_wins(
    tmp_path, data_root, monkeypatch, capsys, env, overrides, wandb
):
    if env:
        monkeypatch.setenv("WANDB_MODE", env)
    else:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    folder = train(tmp_path, data_root, *overrides)
    assert folder.config()["wandb"] == wandb
    assert (folder.path / "wandb").exists() == (wandb != "disabled")
    assert folder.wandb_id_file.exists() == (wandb != "disabled")
    if wandb == "offline":
        assert "wandb:" not in capsys.readouterr().err  # no banners unless WANDB_SILENT=false asks
        assert list((folder.path / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.parametrize("silent_env, silent", [(None, True), ("false", False)])
def test_w_and_b_runs_quietly_without_the_system_stats_sampler(tmp_path, monkeypatch, silent_env, silent):
    import wandb

    made = []

    class Run:
        def define_metric(self, *args, **kwargs):
            pass

    monkeypatch.setattr(wandb, "init", lambda **kwargs: made.append(kwargs) or Run())
    if silent_env:
        monkeypatch.setenv("WANDB_SILENT", silent_env)
    else:
        monkeypatch.delenv("WANDB_SILENT", raising=False)
    run_loggers(RunFolder(tmp_path), make_config({"wandb": "offline"}))
    ((settings, mode),) = [(m["settings"], m["mode"]) for m in made]
    assert settings.x_disable_stats and settings.silent == silent and mode == "offline"


def test_an_unknown_wandb_mode_is_one_line(tmp_path, data_root, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    sweep = tmp_path / "w.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    assert main(["train", str(sweep), "--results-dir", str(tmp_path / "r"), "--data-dir", str(data_root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: WANDB_MODE=sometimes") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
