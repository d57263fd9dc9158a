"""The README's "Use the models in your own code" example, executed on a freshly trained tiny run."""

import re
from pathlib import Path

import torch

from vae import VAE, load_run
from vae.config import RunSpec, make_config
from vae.runs.folder import RunFolder
from vae.runs.train import run_one

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE_RUN = "results/runs/fig2-mnist-aevb/nz20-seed0"
TINY = dict(hidden=20, nz=2, n_train=2000, budget=20000, eval_start=5000, lr=0.02, adagrad_warmup=10,
            wandb="disabled")


def readme_example() -> str:
    section = README.read_text().split("## Use the models in your own code", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_readme_example_runs_and_log_px_lies_above_the_bound(tmp_path, data_root, monkeypatch, capsys):
    run_one("t", RunSpec("r", make_config(TINY)), tmp_path, data_root)
    run = RunFolder.of(tmp_path, "t", "r")
    code = readme_example()
    assert EXAMPLE_RUN in code
    monkeypatch.setenv("VAE_DATA_DIR", str(data_root))
    scope: dict = {}
    exec(code.replace(EXAMPLE_RUN, str(run.path)), scope)
    assert scope["images"].shape == (16, 784) and scope["probs"].shape == (100, 784)
    assert scope["mean"].shape == scope["logvar"].shape == (100, 2)
    assert float(scope["log_px"].mean()) >= float(scope["bound"].mean())
    assert "log p(x)" in capsys.readouterr().out


def test_importance_sampled_log_px_rises_with_k_and_load_run_matches_the_checkpoint(tmp_path, data_root):
    run_one("t", RunSpec("r", make_config(TINY)), tmp_path, data_root)
    model, cfg = load_run(RunFolder.of(tmp_path, "t", "r").path)
    assert cfg.nz == 2 and not model.training
    same = VAE.load_from_checkpoint(RunFolder.of(tmp_path, "t", "r").checkpoint, map_location="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values()))
    x = torch.rand(50, 784, generator=torch.Generator().manual_seed(0)).round()
    with torch.no_grad():
        few, many = (float(model.log_marginal(x, k=k).mean()) for k in (1, 2000))
        bound = float(model.elbo(x, generator=torch.Generator().manual_seed(1)).mean())
    assert many > few and many > bound
