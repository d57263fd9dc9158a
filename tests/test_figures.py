"""The figures draw what the logs and tables hold: each test reads back the lines, bands and images of the
drawn figure and compares them with the metrics CSVs, the tables and the paper's digitized curves."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import yaml
from helpers import SMOKE, fake_run, train_args

from vae.__main__ import main
from vae.results.figures import COLOURS, STYLES, draw_figure2, draw_figure3
from vae.results.paper import load_paper
from vae.results.runs import figure_runs, gather

OURS, REFERENCE, PAPER = 1.6, 0.9, 3  # line widths: our runs, the reference runs, the paper's curves
FREY = dict(dataset="frey", decoder="gaussian-sigmoid-mean", hidden=200)


def panel(fig: plt.Figure, title: str) -> plt.Axes:
    (ax,) = [a for a in fig.axes if a.get_title() == title]
    return ax


def lines(ax: plt.Axes, width: float) -> dict[tuple, np.ndarray]:
    """The (x, y) points of the lines of one width on ``ax``, by (colour, line style)."""
    found = {}
    for line in ax.get_lines():
        if line.get_linewidth() == width:
            key = (tuple(line.get_color()), line.get_linestyle())
            assert key not in found, f"two lines drawn as {key}"
            found[key] = line.get_xydata()
    return found


def within(ax: plt.Axes, points: np.ndarray) -> bool:
    """Whether every one of ``points`` lies inside the x- and y-limits of ``ax``."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    x, y = points[:, 0], points[:, 1]
    return bool(((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)).all())


def marks(ax: plt.Axes) -> list[tuple[str, tuple[float, float], tuple, float]]:
    """The marks of curves beyond the y-axis on ``ax``: (triangle, point, colour, alpha), sorted."""
    return sorted(
        (line.get_marker(), tuple(line.get_xydata()[0]), tuple(line.get_color()), line.get_alpha())
        for line in ax.get_lines()
        if line.get_marker() in ("v", "^")
    )


def legend(fig: plt.Figure) -> list[str]:
    """The labels of the figure's legend."""
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def shaded(ax: plt.Axes, points: np.ndarray) -> bool:
    """Whether some band on ``ax`` has every one of ``points`` among its vertices."""
    return any(
        all(np.isclose(v, p, atol=5e-4).all(axis=1).any() for p in points)
        for c in ax.collections
        for v in (c.get_paths()[0].vertices,)
    )


def test_figure_2_draws_the_mean_of_the_seeds_and_its_interval_as_tabulated_beside_the_papers_curves(tmp_path):
    logged = {
        0: [(100000, -170, -169), (1000000, -136, -135)],
        1: [(100000, -166, -163), (1000000, -134, -132)],
        2: [(100000, -168, -167), (1000000, -137, -133)],
    }
    for seed, rows in logged.items():
        fake_run(tmp_path, "m", f"nz5-seed{seed}", rows, nz=5, seed=seed)
        if seed < 2:  # two seeds of Nz = 10: their mean, no interval
            fake_run(tmp_path, "m", f"nz10-seed{seed}", rows, nz=10, seed=seed)
    frey = fake_run(
        tmp_path, "w", "nz2-seed0", [(100000, 200, 250), (1000000, 700, 690)], algorithm="wakesleep", nz=2, **FREY
    )
    metrics = pd.read_csv(frey / "metrics.csv").assign(**{"train/running_elbo": [180.0, 650.0]})
    metrics.to_csv(frey / "metrics.csv", index=False)
    assert main(["tables", "--results-dir", str(tmp_path), "--reference", str(tmp_path / "none")]) == 0
    table = pd.read_csv(tmp_path / "tables" / "fig2.csv")
    fig = draw_figure2(figure_runs(gather(tmp_path).runs, 2), [])

    mnist, red = panel(fig, "MNIST, $N_z$=5"), COLOURS["aevb"]
    ours = lines(mnist, OURS)
    assert set(ours) == {(red, "-"), (red, "--")}
    for column, (split, style) in enumerate(STYLES.items(), start=1):
        mean = np.mean([[row[column] for row in rows] for rows in logged.values()], axis=0)
        assert np.allclose(ours[(red, style)], np.column_stack([[100000, 1000000], mean]))
        tabulated = table[(table["nz"] == 5) & (table["split"] == split)]
        assert np.allclose(ours[(red, style)], tabulated[["samples", "elbo"]], atol=5e-4)
        assert shaded(mnist, tabulated[["samples", "elbo_ci_low"]].to_numpy())
        assert shaded(mnist, tabulated[["samples", "elbo_ci_high"]].to_numpy())
    paper = load_paper()
    for series, style in (("AEVB train", "-"), ("WS test", "--")):
        curve = paper[(paper["panel"] == "MNIST Nz=5") & (paper["series"] == series)]
        colour = red if series.startswith("AEVB") else COLOURS["wakesleep"]
        assert np.array_equal(lines(mnist, PAPER)[(colour, style)], curve[["x_samples_evaluated", "value"]])

    face, green = panel(fig, "Frey Face, $N_z$=2"), COLOURS["wakesleep"]
    ours = lines(face, OURS)
    assert np.array_equal(ours[(green, ":")], metrics[["samples", "train/running_elbo"]])
    assert np.array_equal(ours[(green, "-")], metrics[["samples", "train/elbo"]])
    assert np.array_equal(ours[(green, "--")], metrics[["samples", "test/elbo"]])
    assert not face.collections  # one seed: no interval
    two = panel(fig, "MNIST, $N_z$=10")
    mean = np.mean([[row[2] for row in rows] for seed, rows in logged.items() if seed < 2], axis=0)
    assert np.allclose(lines(two, OURS)[(red, "--")], np.column_stack([[100000, 1000000], mean]))
    assert not two.collections  # two seeds: the mean, no interval
    assert lines(panel(fig, "MNIST, $N_z$=3"), OURS) == {}
    plt.close(fig)


def test_figure_2_shades_a_curve_where_three_seeds_logged_it(tmp_path):
    """Seeds that reached different budgets: the interval is shaded up to the last point the three seeds share,
    and the curve goes on beyond it, unshaded, as the one seed that logged it."""
    shared = [(100000, -170, -169), (1000000, -136, -135)]
    for seed, rows in ((0, [*shared, (10000000, -110, -109)]), (1, shared), (2, shared)):
        fake_run(tmp_path, "m", f"nz5-seed{seed}", [(s, a + seed, b - seed) for s, a, b in rows], nz=5, seed=seed)
    mnist = panel(draw_figure2(figure_runs(gather(tmp_path).runs, 2), []), "MNIST, $N_z$=5")
    test = lines(mnist, OURS)[(COLOURS["aevb"], "--")]
    assert np.array_equal(test[:, 0], [100000, 1000000, 10000000]) and test[-1, 1] == -109
    assert len(mnist.collections) == 2  # train and test
    for band in mnist.collections:
        (path,) = band.get_paths()
        assert path.vertices[:, 0].min() == 100000 and path.vertices[:, 0].max() == 1000000
    plt.close("all")


def test_figures_command_writes_figure_2_as_png_and_pdf(tmp_path):
    fake_run(tmp_path, "m", "nz5-seed0", [(100000, -170, -169), (1000000, -136, -135)], nz=5)
    assert main(["figures", "--results-dir", str(tmp_path)]) == 0
    png, pdf = tmp_path / "figures" / "fig2.png", tmp_path / "figures" / "fig2.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert not list((tmp_path / "figures").glob("*.tmp"))


def test_figure_3_draws_each_algorithms_marginal_likelihood_in_millions_of_samples_as_tabulated(tmp_path):
    logged = {
        "aevb": [(2000000, -130, -145), (4000000, -120, -144)],
        "wakesleep": [(2000000, -140, -150), (4000000, -135, -149)],
        "mcem": [(2010000, -150, -155), (4005000, -145, -152)],
    }  # whole MCEM iterations (15 * 1000)
    for algorithm, rows in logged.items():
        fake_run(
            tmp_path,
            "f3",
            algorithm,
            rows,
            metric="marginal",
            evaluation="marginal",
            algorithm=algorithm,
            hidden=100,
            nz=3,
            n_train=1000,
        )
    assert main(["tables", "--results-dir", str(tmp_path), "--reference", str(tmp_path / "none")]) == 0
    table = pd.read_csv(tmp_path / "tables" / "fig3.csv")
    fig = draw_figure3(figure_runs(gather(tmp_path).runs, 3), [])
    ours = lines(panel(fig, "$N_{train}$ = 1000"), OURS)
    assert len(ours) == 6 and lines(panel(fig, "$N_{train}$ = 50000"), OURS) == {}
    for algorithm, rows in logged.items():
        for column, (split, style) in enumerate(STYLES.items(), start=1):
            xy = ours[(COLOURS[algorithm], style)]
            assert np.allclose(xy, [(samples / 1e6, row[column]) for row in rows for samples in (row[0],)])
            tabulated = table[(table["algorithm"] == algorithm) & (table["split"] == split)]
            assert len(tabulated) and all(
                np.isclose(xy, (samples / 1e6, value)).all(axis=1).any()
                for samples, value in zip(tabulated["samples"], tabulated["marginal"], strict=True)
            )
    plt.close(fig)
    assert main(["figures", "--results-dir", str(tmp_path), "--no-wandb"]) == 0
    assert (tmp_path / "figures" / "fig3.png").read_bytes()[:4] == b"\x89PNG"
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
    shown = gather(user, reference)
    fig = draw_figure2(figure_runs(shown.runs, 2), figure_runs(shown.reference, 2))
    ax, red = panel(fig, "MNIST, $N_z$=5"), COLOURS["aevb"]
    assert np.array_equal(lines(ax, OURS)[(red, "--")], [(100000, -159), (1000000, -129)])
    assert np.array_equal(lines(ax, REFERENCE)[(red, "--")], [(100000, -169), (1000000, -135)])
    assert all(line.get_alpha() == 0.55 for line in ax.get_lines() if line.get_linewidth() == REFERENCE)
    plt.close(fig)


def test_a_smoke_run_below_the_papers_axes_is_drawn_inside_figure_2s_axes(tmp_path, data_root, capsys):
    sweep, results = tmp_path / "smoke.yaml", tmp_path / "results"
    sweep.write_text(yaml.safe_dump(SMOKE))
    assert (
        main(
            [
                *train_args(sweep, results / "smoke", data_root),
                "--set",
                "wandb=disabled",
            ]
        )
        == 0
    )  # as `make smoke` does, into results/smoke
    assert main(["figures", "--results-dir", str(results), "--reference", str(tmp_path / "none"), "--no-wandb"]) == 0
    assert f"runs read from {results}/smoke/runs" in capsys.readouterr().out
    assert (results / "figures" / "fig2.png").is_file()
    fig = draw_figure2(figure_runs(gather(results).runs, 2), [])
    for nz in (3, 20):
        ax = panel(fig, f"MNIST, $N_z$={nz}")
        drawn = np.concatenate(list(lines(ax, OURS).values()))
        assert len(drawn) >= 4 and drawn[:, 0].min() < 1e5 and drawn[:, 1].max() < -150  # beyond the paper's axes
        assert within(ax, drawn) and ax.get_ylim()[1] == -95  # the paper's range still shown
        assert marks(ax) == []
    assert "your runs" in legend(fig) and "curve continues beyond the axis" not in legend(fig)
    plt.close(fig)


def test_a_curve_beyond_the_axis_is_marked_on_its_edge_and_the_legend_tells_the_curves_apart(tmp_path):
    user, reference = tmp_path / "results", tmp_path / "reference"
    fake_run(user, "m", "nz5-seed0", [(100000, -130, -131), (1000000, -120, -121)], nz=5)
    fake_run(reference, "m", "nz5-seed0", [(100000, -300, -301), (300000, -140, -90), (1000000, -125, -126)], nz=5)
    shown = gather(user, reference)
    fig = draw_figure2(figure_runs(shown.runs, 2), figure_runs(shown.reference, 2))
    ax, red = panel(fig, "MNIST, $N_z$=5"), COLOURS["aevb"]
    assert ax.get_ylim() == (-150, -95)  # your runs lie inside the paper's range; the reference does not widen it
    # the reference's train and test curves start below the axis; its test curve also rises above it
    assert marks(ax) == [
        ("^", (300000, -95), red, 0.55),
        ("v", (100000, -150), red, 0.55),
        ("v", (100000, -150), red, 0.55),
    ]
    assert all(marks(a) == [] for a in fig.axes if a is not ax)
    assert {"your runs", "reference runs", "paper (digitized)", "curve continues beyond the axis"} <= set(legend(fig))
    plt.close(fig)

    alone = draw_figure2(figure_runs(shown.reference, 2), [], users=False)  # the reference shown alone
    ax = panel(alone, "MNIST, $N_z$=5")
    assert ax.get_ylim() == (-150, -95) and len(marks(ax)) == 3 and within(ax, lines(ax, OURS)[(red, "-")][1:])
    assert "reference runs" in legend(alone) and "your runs" not in legend(alone)
    plt.close(alone)


def test_figure_3_widens_its_axes_to_hold_the_users_runs(tmp_path):
    fake_run(
        tmp_path,
        "f3",
        "aevb",
        [(2000000, -200, -210), (80000000, -150, -155)],
        metric="marginal",
        evaluation="marginal",
        hidden=100,
        nz=3,
        n_train=1000,
    )
    fig = draw_figure3(figure_runs(gather(tmp_path).runs, 3), [])
    ax = panel(fig, "$N_{train}$ = 1000")
    drawn = np.concatenate(list(lines(ax, OURS).values()))
    assert len(drawn) == 4 and within(ax, drawn) and ax.get_ylim()[1] == -100 and ax.get_xlim()[0] == 0
    assert panel(fig, "$N_{train}$ = 50000").get_ylim() == (-160, -125)
    plt.close(fig)


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
    from vae.results.figures import image_figure, image_figures, planned_images
    from vae.runs.train import run_one

    cfg = make_config(
        {"nz": 2, "hidden": 20, "n_train": 2000, "budget": 10000, "eval_start": 5000, "lr": 0.02, "wandb": "disabled"}
    )
    run_one("f", RunSpec("nz2", cfg), tmp_path, data_root)
    settings = {
        "seed": 0,
        "figure4": {"mnist": {"run": "runs/f/nz2", "grid": 5}},
        "figure5": ["runs/f/nz2", "runs/f/missing"],
    }
    plans = planned_images(tmp_path, settings)
    written = image_figures(plans, tmp_path / "figures")
    assert [p.name for p in written] == ["fig4_mnist.png", "fig5_mnist_nz2.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    for _, model, z, n in plans:  # cell (r, c) of the grid shows the mean of p(x|z) of point r * n + c
        fig = image_figure(model, z, n)
        shown = fig.axes[0].get_images()[0].get_array()
        assert shown.shape == (n * 28, n * 28)
        with torch.no_grad():
            means = model.decode(z).reshape(n, n, 28, 28).numpy()
        assert np.array_equal(shown[28:56, 56:84], means[1, 2]) and np.array_equal(shown[-28:, -28:], means[-1, -1])
        plt.close(fig)


def test_figures_are_added_to_the_runs_wandb_pages(tmp_path, data_root):
    from vae.config import RunSpec, make_config
    from vae.results.figures import log_to_wandb
    from vae.runs.train import run_one

    cfg = make_config(
        {"nz": 2, "hidden": 20, "n_train": 2000, "budget": 10000, "eval_start": 5000, "lr": 0.02, "wandb": "offline"}
    )
    run_one("f", RunSpec("w", cfg), tmp_path, data_root)
    run = tmp_path / "runs" / "f" / "w"
    fake_run(tmp_path, "f", "off", [(100000, -170, -169)], wandb="disabled")
    image = tmp_path / "img.png"
    plt.imsave(image, np.zeros((4, 4)))
    assert log_to_wandb([run, tmp_path / "runs" / "f" / "off"], {"fig2": image}) == 1
    sessions = sorted((run / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and list(sessions[-1].glob("files/media/images/figures/fig2_*.png"))


def test_a_sweeps_wandb_group_gets_the_papers_curves_once_and_quietly(tmp_path, capfd, monkeypatch):
    from wandb.proto import wandb_internal_pb2

    from vae.config import load_sweep
    from vae.results.wandb_paper import log_paper_curves
    from vae.runs.wandb_history import durable_steps, records

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": {"wandb": "offline"}, "grid": {"nz": [3, 20]}}))
    sweep = load_sweep(path)
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    assert log_paper_curves(sweep, tmp_path) == ["paper/MNIST Nz=3 AEVB", "paper/MNIST Nz=20 AEVB"]
    assert "wandb:" not in "".join(capfd.readouterr())  # no banners unless WANDB_SILENT=false asks
    assert log_paper_curves(sweep, tmp_path) == []  # already there
    paper = load_paper()
    sessions = sorted((tmp_path / "runs" / "s" / "paper" / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2
    for session in sessions:
        run_id = session.name.rsplit("-", 1)[-1]
        (info,) = [
            r.run
            for raw in records(session / f"run-{run_id}.wandb")
            if (r := wandb_internal_pb2.Record.FromString(raw)).WhichOneof("record_type") == "run"
        ]
        assert info.run_group == "s" and info.display_name.startswith("paper/MNIST Nz=")
        nz = info.display_name.split("=")[1].split()[0]
        xs = paper[
            (paper["panel"] == f"MNIST Nz={nz}")
            & paper["series"].str.startswith("AEVB")
            & (paper["kind"] == "evaluation")
        ]
        steps = durable_steps(session.parent, run_id)
        assert steps == sorted(set(xs["x_samples_evaluated"].round().astype(int)))
