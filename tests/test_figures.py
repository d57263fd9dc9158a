import matplotlib.pyplot as plt
import numpy as np
import yaml
from helpers import fake_run

from vae.__main__ import main


def test_figures_command_draws_figure_2_from_logged_runs(tmp_path, capsys):
    fake_run(tmp_path, "m", "nz5-seed0", [(100000, -170, -169), (1000000, -136, -135)], nz=5)
    fake_run(tmp_path, "f", "nz2-seed0", [(100000, 300, 350), (1000000, 700, 690)], dataset="frey", nz=2,
             decoder="gaussian-sigmoid-mean", hidden=200)
    fake_run(tmp_path, "w", "nz2-seed0", [(100000, 200, 250)], dataset="frey", nz=2, algorithm="wakesleep",
             decoder="gaussian-sigmoid-mean", hidden=200)
    assert main(["figures", "--results-dir", str(tmp_path)]) == 0
    png, pdf = tmp_path / "figures" / "fig2.png", tmp_path / "figures" / "fig2.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert not list((tmp_path / "figures").glob("*.tmp"))


def test_figures_command_draws_figure_3_from_marginal_likelihood_runs(tmp_path):
    for algorithm in ("aevb", "wakesleep", "mcem"):
        fake_run(tmp_path, "f3", algorithm, [(2000000, -130, -145), (4000000, -120, -144)], metric="marginal",
                 evaluation="marginal", algorithm=algorithm, hidden=100, nz=3, n_train=1000)
    assert main(["figures", "--results-dir", str(tmp_path), "--no-wandb"]) == 0
    assert (tmp_path / "figures" / "fig3.png").stat().st_size > 30_000
    assert not (tmp_path / "figures" / "fig2.png").exists()


def test_figures_without_runs_fail_with_a_message(tmp_path, capsys):
    assert main(["figures", "--results-dir", str(tmp_path), "--reference", str(tmp_path / "none")]) == 2
    assert "no complete runs" in capsys.readouterr().err


def test_figures_draw_the_reference_behind_the_user_runs_and_alone_without_them(tmp_path, capsys):
    user, reference = tmp_path / "results", tmp_path / "reference"
    fake_run(reference, "m", "nz5-seed0", [(100000, -170, -169), (1000000, -136, -135)], nz=5, wandb="offline")
    (reference / "runs" / "m" / "nz5-seed0" / "wandb_id").write_text("abcd0123")
    assert main(["figures", "--results-dir", str(user), "--reference", str(reference)]) == 0
    assert "showing the committed reference runs" in capsys.readouterr().out
    assert (reference / "figures" / "fig2.png").is_file() and not user.exists()
    assert not (reference / "runs" / "m" / "nz5-seed0" / "wandb").exists()  # the reference's W&B is not touched
    fake_run(user, "m", "nz5-seed0", [(100000, -160, -159), (1000000, -130, -129)], nz=5)
    alone = plt.imread(reference / "figures" / "fig2.png")
    assert main(["figures", "--results-dir", str(user), "--reference", str(reference), "--no-wandb"]) == 0
    both = plt.imread(user / "figures" / "fig2.png")
    assert alone.shape == both.shape and not np.array_equal(alone, both)


def test_manifold_grid_is_the_gaussian_inverse_cdf_of_cell_centres():
    from scipy.stats import norm

    from vae.results.figures import manifold_grid

    z = manifold_grid(4).numpy()
    assert z.shape == (16, 2)
    centres = norm.ppf([0.125, 0.375, 0.625, 0.875])
    assert np.allclose(z[:4, 0], centres) and np.allclose(z[:4, 1], centres[-1])  # top row: highest z_2
    assert np.allclose(z[::4, 1], centres[::-1])


def test_tile_places_image_k_at_row_k_div_cols_and_column_k_mod_cols():
    from vae.results.figures import tile

    images = np.arange(6)[:, None, None] * np.ones((6, 2, 3))
    grid = tile(images, 2, 3)
    assert grid.shape == (4, 9)
    assert grid[0, 0] == 0 and grid[0, 3] == 1 and grid[2, 0] == 3 and grid[3, 8] == 5


def test_figures_4_and_5_come_from_a_trained_checkpoint(tmp_path, data_root):
    from vae.config import RunSpec, make_config
    from vae.results.figures import image_figures, planned_images
    from vae.runs.train import run_one

    cfg = make_config({"nz": 2, "hidden": 20, "n_train": 2000, "budget": 10000, "eval_start": 5000,
                       "lr": 0.02, "wandb": "disabled"})
    run_one("f", RunSpec("nz2", cfg), tmp_path, data_root)
    settings = {"seed": 0, "figure4": {"mnist": {"run": "runs/f/nz2", "grid": 5}},
                "figure5": ["runs/f/nz2", "runs/f/missing"]}
    written = image_figures(planned_images(tmp_path, settings), tmp_path / "figures")
    assert [p.name for p in written] == ["fig4_mnist.png", "fig5_mnist_nz2.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_figures_are_added_to_the_runs_wandb_pages(tmp_path, data_root):
    from vae.config import RunSpec, make_config
    from vae.results.figures import log_to_wandb
    from vae.runs.train import run_one

    cfg = make_config({"nz": 2, "hidden": 20, "n_train": 2000, "budget": 10000, "eval_start": 5000,
                       "lr": 0.02, "wandb": "offline"})
    run_one("f", RunSpec("w", cfg), tmp_path, data_root)
    run = tmp_path / "runs" / "f" / "w"
    fake_run(tmp_path, "f", "off", [(100000, -170, -169)], wandb="disabled")
    image = tmp_path / "img.png"
    plt.imsave(image, np.zeros((4, 4)))
    assert log_to_wandb([run, tmp_path / "runs" / "f" / "off"], {"fig2": image}) == 1
    sessions = sorted((run / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and list(sessions[-1].glob("files/media/images/figures/fig2_*.png"))


def test_a_sweeps_wandb_group_gets_the_papers_curves_once(tmp_path):
    from wandb.proto import wandb_internal_pb2

    from vae.config import load_sweep
    from vae.results.paper import load_paper
    from vae.results.wandb_paper import log_paper_curves
    from vae.runs.wandb_history import durable_steps, records

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": {"wandb": "offline"}, "grid": {"nz": [3, 20]}}))
    sweep = load_sweep(path)
    assert log_paper_curves(sweep, tmp_path) == ["paper/MNIST Nz=3 AEVB", "paper/MNIST Nz=20 AEVB"]
    assert log_paper_curves(sweep, tmp_path) == []  # already there
    paper = load_paper()
    sessions = sorted((tmp_path / "runs" / "s" / "paper" / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2
    for session in sessions:
        run_id = session.name.rsplit("-", 1)[-1]
        (info,) = [r.run for raw in records(session / f"run-{run_id}.wandb")
                   if (r := wandb_internal_pb2.Record.FromString(raw)).WhichOneof("record_type") == "run"]
        assert info.run_group == "s" and info.display_name.startswith("paper/MNIST Nz=")
        nz = info.display_name.split("=")[1].split()[0]
        xs = paper[(paper["panel"] == f"MNIST Nz={nz}") & paper["series"].str.startswith("AEVB")
                   & (paper["kind"] == "evaluation")]
        steps = durable_steps(session.parent, run_id)
        assert steps == sorted(set(xs["x_samples_evaluated"].round().astype(int)))
