"""The latent-space report: its terms add up to the bound of vae.bounds, and it finds the active dimensions."""

import pytest
import torch
import yaml

from vae.algorithms import AEVB
from vae.bounds import elbo
from vae.config import make_config
from vae.data import load_dataset
from vae.diagnose import latent_report


def test_the_bound_splits_into_reconstruction_and_kl_and_two_of_six_dimensions_are_active(tmp_path, data_root):
    cfg = make_config(dict(nz=6, hidden=30, n_train=1000))
    model = AEVB(cfg)
    with torch.no_grad():
        model.encoder.mean.weight.zero_()
        model.encoder.mean.bias.zero_()
        model.encoder.mean.weight[:2] = torch.randn((2, 30), generator=torch.Generator().manual_seed(1))
        model.encoder.logvar.weight.zero_()
        model.encoder.logvar.bias.zero_()
        model.encoder.hidden.weight.mul_(100)  # hidden units that vary with x, so dims 0 and 1 do too
    run = tmp_path / "runs" / "s" / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    torch.save({"state_dict": model.state_dict()}, run / "checkpoints" / "last.ckpt")

    report = latent_report(run, data_root, points=500, seed=3)

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
