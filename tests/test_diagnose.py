"""The latent-space report: its terms add up to the bound of vae.models.bounds, and it finds the active dimensions."""

import pytest
import torch

from vae.config import make_config
from vae.data import load_dataset
from vae.models.bounds import elbo
from vae.models.vae import VAE
from vae.results.diagnose import latent_report
from vae.runs.folder import RunFolder


def test_the_bound_splits_into_reconstruction_and_kl_and_two_of_six_dimensions_are_active(tmp_path, data_root):
    cfg = make_config(dict(nz=6, hidden=30, n_train=1000))
    model = VAE(cfg)
    with torch.no_grad():
        model.encoder.mean.weight.zero_()
        model.encoder.mean.bias.zero_()
        model.encoder.mean.weight[:2] = torch.randn((2, 30), generator=torch.Generator().manual_seed(1))
        model.encoder.logvar.weight.zero_()
        model.encoder.logvar.bias.zero_()
        model.encoder.hidden.weight.mul_(100)  # hidden units that vary with x, so dims 0 and 1 do too
    run = RunFolder.of(tmp_path, "s", "r")
    run.write_config(cfg.to_dict())
    run.checkpoint.parent.mkdir()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"config": cfg.to_dict()}}, run.checkpoint)

    report = latent_report(run.path, data_root, points=500, seed=3)

    x = load_dataset(cfg, data_root)[1][:500]
    eps = torch.randn((1, 500, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = elbo(x, model.encoder, model.decoder, "B", 1, eps=eps).mean()
    assert report["bound"] == pytest.approx(float(expected), rel=1e-5)
    assert report["bound"] == pytest.approx(report["reconstruction"] - report["kl"], rel=1e-6)
    assert report["kl_means"] + report["kl_variances"] == pytest.approx(report["kl"], rel=1e-5)
    assert report["kl_variances"] == 0.0  # every log-variance head outputs 0: sigma^2 = 1
    assert report["active_dims"] == 2
    assert report["kl_inactive"] == 0.0 and report["inactive_abs_mean"] == 0.0 and report["inactive_var"] == 1.0
    assert report["kl_active"] == pytest.approx(report["kl"], rel=1e-6) and report["kl_active"] > 0.5


def test_the_report_on_bernoulli_draws_and_on_fantasies_sees_those_inputs(tmp_path, data_root):
    """inputs=bernoulli: binary images whose pixel means are the test grey levels; inputs=fantasies: x ~ p(x|z)
    with z ~ N(0, I), so an untrained decoder (logits near 0) gives pixels that are 1 about half the time."""
    from vae.results.diagnose import inputs_of

    model = VAE(make_config(dict(nz=4, hidden=30, n_train=1000)))
    test = load_dataset(model.cfg, data_root)[1][:2000]
    drawn = inputs_of(model, test, "bernoulli", torch.Generator().manual_seed(0))
    assert set(drawn.unique().tolist()) == {0.0, 1.0}
    assert float(drawn.mean()) == pytest.approx(float(test.mean()), abs=3e-3)
    fantasies = inputs_of(model, test, "fantasies", torch.Generator().manual_seed(0))
    assert fantasies.shape == test.shape and set(fantasies.unique().tolist()) == {0.0, 1.0}
    assert float(fantasies.mean()) == pytest.approx(0.5, abs=0.01)
    run = RunFolder.of(tmp_path, "s", "r")
    run.write_config(model.cfg.to_dict())
    run.checkpoint.parent.mkdir()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"config": model.cfg.to_dict()}}, run.checkpoint)
    rows = {kind: latent_report(run.path, data_root, points=500, inputs=kind) for kind in ("test", "fantasies")}
    assert rows["fantasies"]["inputs"] == "fantasies" and rows["fantasies"]["bound"] != rows["test"]["bound"]
