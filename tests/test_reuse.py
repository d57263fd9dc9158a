"""The README's "Use the models in your own code" example, executed on a freshly trained tiny run."""

import re
from pathlib import Path

import pytest
import torch

from vae import VAE, load_run
from vae.config import RunSpec, make_config
from vae.data import load_dataset
from vae.runs.folder import RunFolder
from vae.runs.train import run_one

README = Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE_RUN = "results/runs/fig2-mnist-aevb/nz20-seed0"
TINY = dict(hidden=20, nz=2, n_train=2000, budget=20000, eval_start=5000, lr=0.02, adagrad_warmup=10, wandb="disabled")


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
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), same.state_dict().values(), strict=True))
    x = torch.rand(50, 784, generator=torch.Generator().manual_seed(0)).round()
    with torch.no_grad():
        few, many = (float(model.log_marginal(x, k=k).mean()) for k in (1, 2000))
        bound = float(model.elbo(x, generator=torch.Generator().manual_seed(1)).mean())
    assert many > few and many > bound


def test_load_run_puts_the_model_on_a_device_and_knows_the_data_folder_the_run_trained_on(
    tmp_path, data_root, monkeypatch
):
    """The run's status.json records its data folder (absolute), which wins over today's $VAE_DATA_DIR, so the
    run's data load again from anywhere; a run without the record gets the folder training would use today."""
    run_one("t", RunSpec("r", make_config(TINY)), tmp_path, data_root)
    folder = RunFolder.of(tmp_path, "t", "r")
    assert folder.status()["data_dir"] == str(Path(data_root).resolve())
    monkeypatch.setenv("VAE_DATA_DIR", str(tmp_path / "elsewhere"))
    model, cfg = load_run(folder.path, device=torch.device("cpu"))
    assert model.data_dir == Path(data_root).resolve()
    assert load_dataset(cfg, model.data_dir)[1].shape == (10000, 784)
    meta, _ = load_run(folder.path, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters()) and not meta.training
    status = folder.status()
    del status["data_dir"]
    folder.write_status(status)
    assert load_run(folder.path)[0].data_dir == tmp_path / "elsewhere"


MODEL = VAE(make_config(dict(hidden=20, nz=2)))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: MODEL.encode(torch.rand(5, 28, 28)),
            ValueError,
            "expected x of shape (n, 784) and dtype torch.float32, got (5, 28, 28) torch.float32; flatten it: "
            "x.reshape(len(x), -1)",
        ),
        (
            lambda: MODEL.elbo(torch.rand(5, 784, dtype=torch.float64)),
            TypeError,
            "expected x of shape (n, 784) and dtype torch.float32, got (5, 784) torch.float64; convert it: "
            "x.to(torch.float32)",
        ),
        (
            lambda: MODEL.log_marginal(torch.zeros(5, 784, dtype=torch.uint8)),
            TypeError,
            "expected x of shape (n, 784) and dtype torch.float32, got (5, 784) torch.uint8; "
            "convert it: x.to(torch.float32)",
        ),
        (
            lambda: MODEL.log_marginal([[0.5] * 784]),
            TypeError,
            "expected x of shape (n, 784) and dtype torch.float32, got a list",
        ),
        (
            lambda: MODEL.decode(torch.zeros(5, 3)),
            ValueError,
            "expected z of shape (n, 2) and dtype torch.float32, got (5, 3) torch.float32",
        ),
        (
            lambda: MODEL.decode(torch.zeros(2)),
            ValueError,
            "expected z of shape (n, 2) and dtype torch.float32, got (2,) torch.float32",
        ),
    ],
    ids=["28x28 images", "float64", "bytes", "a list", "another Nz", "one z without its batch"],
)
def test_a_batch_of_the_wrong_shape_or_dtype_is_refused_in_one_line_that_says_what_is_expected(call, error, message):
    with pytest.raises(error) as refused:
        call()
    assert str(refused.value) == message
