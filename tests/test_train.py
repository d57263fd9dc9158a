"""End to end on tiny budgets: the real Trainer, real MNIST, CSV and offline W&B, resume and extension."""

import io
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from vae.__main__ import main
from vae.config import ConfigError, RunSpec, make_config
from vae.models.vae import VAE
from vae.runs.checkpoint import load_model
from vae.runs.folder import RunFolder
from vae.runs.train import run_one

TINY = dict(
    hidden=20,
    nz=2,
    n_train=2000,
    budget=20000,
    eval_start=5000,
    lr_select_samples=5000,
    adagrad_warmup=10,
    wandb="disabled",
)


def train(results: Path, data_root: Path, name: str = "run", **overrides) -> dict:
    spec = RunSpec(name=name, config=make_config({**TINY, **overrides}))
    return run_one("test", spec, results, data_root)


def metrics(results: Path, name: str = "run") -> pd.DataFrame:
    return pd.read_csv(results / "runs" / "test" / name / "metrics.csv")


def final_weights(results: Path, name: str = "run") -> dict[str, torch.Tensor]:
    return torch.load(results / "runs" / "test" / name / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


def test_tiny_run_logs_the_paper_axis_and_improves_the_bound(tmp_path, data_root):
    status = train(tmp_path, data_root, wandb="offline")
    run = tmp_path / "runs" / "test" / "run"
    df = metrics(tmp_path)
    assert {"samples", "train/elbo", "test/elbo", "lr", "time/samples_per_s"} <= set(df.columns)
    assert df["samples"].tolist() == [5000, 6300, 7900, 10000, 12600, 15800, 19900, 20000]
    assert df["train/elbo"].iloc[-1] > df["train/elbo"].iloc[0] + 8
    assert df["test/elbo"].iloc[-1] > df["test/elbo"].iloc[0] + 8
    assert status["samples"] == 20000 and status["lr"] in (0.01, 0.02, 0.1)
    assert status["kernels"] == f"{torch.backends.cpu.get_cpu_capability()}, threads={torch.get_num_threads()}"
    assert set(status["lr_selection"]) == {"0.01", "0.02", "0.1"}
    assert yaml.safe_load((run / "config.yaml").read_text())["nz"] == 2
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))
    # time is charged by phase at synchronised points: each phase took some, and together no more than the wall
    phases = [status[f"{p}_seconds"] for p in ("train", "select", "eval", "checkpoint")]
    assert all(t > 0 for t in phases) and sum(phases) <= status["wall_seconds"]
    assert df["time/train_s"].is_monotonic_increasing and df["time/train_s"].iloc[-1] <= status["train_seconds"]


def test_extending_a_finished_run_equals_one_long_run(tmp_path, data_root):
    train(tmp_path / "a", data_root)
    train(tmp_path / "a", data_root, budget=40000)
    train(tmp_path / "b", data_root, budget=40000)
    a, b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert set(a["samples"]) - set(b["samples"]) == {20000}  # the first budget's end point, kept
    cols = ["samples", "train/elbo", "test/elbo", "lr"]
    pd.testing.assert_frame_equal(a[a["samples"] != 20000][cols].reset_index(drop=True), b[cols])
    for key, value in final_weights(tmp_path / "a").items():
        assert torch.equal(value, final_weights(tmp_path / "b")[key]), key


def test_step_size_selection_continues_the_winner_exactly(tmp_path, data_root):
    auto = train(tmp_path / "auto", data_root)
    train(tmp_path / "forced", data_root, lr=auto["lr"])
    cols = ["samples", "train/elbo", "test/elbo"]
    pd.testing.assert_frame_equal(metrics(tmp_path / "auto")[cols], metrics(tmp_path / "forced")[cols])


def test_a_counter_of_five_per_datapoint_stretches_only_the_axis(tmp_path, data_root):
    """count_per_datapoint = 5 (the Frey axis read as a counter) runs the same iterations as 1 with every
    sample count five times larger: the same weights and running averages, logged at five times the x."""
    train(tmp_path / "one", data_root, lr=0.02, running_every=3000)
    train(
        tmp_path / "five",
        data_root,
        lr=0.02,
        count_per_datapoint=5,
        budget=100000,
        eval_start=25000,
        running_every=15000,
    )
    one, five = metrics(tmp_path / "one"), metrics(tmp_path / "five")
    assert (five["samples"] == 5 * one["samples"]).all()
    pd.testing.assert_series_equal(five["train/running_elbo"], one["train/running_elbo"], check_exact=True)
    for key, value in final_weights(tmp_path / "one").items():
        assert torch.equal(value, final_weights(tmp_path / "five")[key]), key


def test_steps_per_call_does_not_change_the_numbers(tmp_path, data_root):
    train(tmp_path / "x", data_root, lr=0.02, steps_per_call=7)
    train(tmp_path / "y", data_root, lr=0.02, steps_per_call=50)
    pd.testing.assert_frame_equal(
        metrics(tmp_path / "x")[["train/elbo", "test/elbo"]], metrics(tmp_path / "y")[["train/elbo", "test/elbo"]]
    )


def test_finished_run_is_not_trained_again_and_changed_config_is_refused(tmp_path, data_root, capsys):
    train(tmp_path, data_root, lr=0.02)
    before = (tmp_path / "runs" / "test" / "run" / "metrics.csv").read_text()
    train(tmp_path, data_root, lr=0.02)
    assert "nothing to do" in capsys.readouterr().out
    assert (tmp_path / "runs" / "test" / "run" / "metrics.csv").read_text() == before
    with pytest.raises(ConfigError, match=r"lr: 0.02 -> 0.1"):
        train(tmp_path, data_root, lr=0.1)


def test_command_line_runs_a_sweep_file(tmp_path, data_root, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "cli", "base": {**TINY, "budget": 10000}, "grid": {"nz": [2, 3]}}))
    assert (
        main(["train", str(sweep), "--results-dir", str(tmp_path), "--data-dir", str(data_root), "--set", "lr=0.02"])
        == 0
    )
    out = capsys.readouterr().out
    assert "nz2-seed0" in out and "nz3-seed0" in out
    assert (tmp_path / "runs" / "cli" / "nz3-seed0" / "metrics.csv").is_file()
    assert main(["train", str(sweep), "--set", "nz=0", "--results-dir", str(tmp_path)]) == 2
    assert "nz=0 must lie in (0, 10000]" in capsys.readouterr().err


def test_a_run_checkpoint_loads_as_a_vae_lightning_module(tmp_path, data_root):
    """The README's reuse promise: a run's checkpoint is a ``VAE`` checkpoint (Lightning's own loader) with the
    trained weights, the same that the run folder gives."""
    train(tmp_path, data_root, lr=0.02)
    folder = RunFolder.of(tmp_path, "test", "run")
    model = VAE.load_from_checkpoint(folder.checkpoint, map_location="cpu")
    assert model.cfg.nz == 2 and model.cfg.lr == 0.02
    expected = load_model(folder).state_dict()
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(model.state_dict()[k], expected[k]) for k in expected)
    x = torch.rand(5, 784)
    assert model.elbo(x, eps=torch.zeros(1, 5, 2)).shape == (5,)


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream", [io.StringIO, Terminal])
def test_progress_is_a_heartbeat_without_a_terminal_and_a_bar_on_one(stream, tmp_path, data_root):
    from vae.runs.progress import Progress

    out = stream()
    cfg = make_config(dict(TINY, budget=30000, lr=0.02))
    run_one("s", RunSpec("r", cfg), tmp_path, data_root, callbacks=[Progress("s/r", "1/3", 1e-6, out)])
    text = out.getvalue()
    if stream is Terminal:  # tqdm's bar on the samples axis, with the last test bound beside it
        assert "[1/3] s/r" in text and "30.0k/30.0k" in text and "test/elbo at 30,000" in text
    else:
        lines = [line for line in text.splitlines() if line]
        assert len(lines) >= 10 and all(line.startswith("[1/3] s/r: ") for line in lines)
        assert re.search(r": [\d,]+ / 30,000 samples \([\d.]+%\), [\d,]+ samples/s, \d+ (s|min) left", lines[-1])
        assert "test/elbo at" in lines[-1]


def test_app_d_settings_of_the_config_reach_the_estimator(tmp_path, data_root, monkeypatch):
    """marginal_bandwidth and marginal_step_tuning are passed to App. D's estimator at every evaluation."""
    import vae.protocol.measurement as measurement

    estimator, seen = measurement.log_marginal_hmc, []

    def recorded(*args, **kwargs):
        seen.append((kwargs["bandwidth"], kwargs["tuning"]))
        return estimator(*args, **kwargs)

    monkeypatch.setattr(measurement, "log_marginal_hmc", recorded)
    marginal = dict(evaluation="marginal", marginal_points=40, marginal_samples=10, marginal_burnin=4)
    cfg = make_config(TINY | marginal | dict(marginal_bandwidth="validated", marginal_step_tuning="chain"))
    run_one("t", RunSpec("r", cfg), tmp_path, data_root)
    rows = pd.read_csv(tmp_path / "runs" / "t" / "r" / "metrics.csv").dropna(subset=["test/marginal"])
    assert len(seen) == 2 * len(rows) > 0 and set(seen) == {("validated", "chain")}
    assert (rows[["train/marginal", "test/marginal"]] < 0).all().all()
