"""Tables from synthetic run logs with known answers."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import fake_run

from vae.__main__ import main
from vae.results.paper import load_paper, paper_value
from vae.results.runs import ReportError, gather
from vae.results.tables import write_tables

FIG2 = {"table_points": [100000, 1000000], "tolerance": {"mnist": {"nats": 6}}}
SETTINGS = {"fig2": FIG2, "fig3": FIG2 | {"table_points": [2000000]}, "ablations": {"table_points": [1000000]}}


@pytest.fixture
def paper():
    return pd.DataFrame(
        {
            "figure": [2] * 4,
            "panel": ["MNIST Nz=5"] * 4,
            "series": ["AEVB test"] * 4,
            "kind": ["start", "evaluation", "evaluation", "evaluation"],
            "x_samples_evaluated": [100.0, 10**6.0, 10**6.2, 10**6.6],
            "value": [-543.4, -140.0, -136.0, -130.0],
        }
    )


def test_paper_value_interpolates_in_log_samples_between_evaluations_only(paper):
    assert paper_value(paper, "MNIST Nz=5", "AEVB test", 1e6) == -140.0
    assert paper_value(paper, "MNIST Nz=5", "AEVB test", 10**6.05) == pytest.approx(-139.0)
    assert paper_value(paper, "MNIST Nz=5", "AEVB test", 10**6.3) == pytest.approx(-134.5)
    assert math.isnan(paper_value(paper, "MNIST Nz=5", "AEVB test", 10**5.9))  # on the drawn first segment
    assert math.isnan(paper_value(paper, "MNIST Nz=5", "AEVB test", 10**6.7))  # after the last evaluation
    assert math.isnan(paper_value(paper, "MNIST Nz=3", "AEVB test", 1e6))


def test_the_shipped_paper_curves_are_the_pdfs_vertices():
    paper = load_paper()
    assert paper_value(paper, "MNIST Nz=20", "AEVB test", 1024100) == -123.88  # a vertex
    assert paper_value(paper, "MNIST Nz=200", "AEVB test", 1e8) == pytest.approx(-100.24, abs=0.01)
    assert math.isnan(paper_value(paper, "MNIST Nz=3", "AEVB test", 3e5))  # first evaluation at 3.023e5
    starts = paper[paper["kind"] == "start"]
    assert len(starts) == 20 and set(starts["figure"]) == {2}  # one per Figure 2 series
    mnist = starts[starts["panel"].str.startswith("MNIST")]
    assert (mnist["value"] == -543.4).all() and mnist["x_samples_evaluated"].between(100, 101).all()


def test_the_scorecard_compares_only_at_the_papers_evaluation_points(tmp_path):
    # MNIST Nz=3 AEVB: the paper's first evaluation is at 3.023e5; a 1e5 point of ours is never compared, and
    # ours is interpolated at every paper evaluation inside the range we logged
    fake_run(tmp_path, "s", "nz3-seed0", [(100000, -300.0, -300.0), (1000000, -150.0, -150.0)], nz=3)
    write_tables(gather(tmp_path), SETTINGS)
    score = pd.read_csv(tmp_path / "tables" / "fig2_scorecard.csv").set_index("split")
    paper = load_paper()
    x = paper[(paper["panel"] == "MNIST Nz=3") & (paper["series"] == "AEVB test") & (paper["kind"] == "evaluation")]
    inside = x[x["x_samples_evaluated"] <= 1e6]
    assert score.loc["test", "points_compared"] == len(inside) >= 3 and score.loc["test", "last_samples"] == 1000000
    first = inside.iloc[0]
    ours = -300.0 + 150.0 * (math.log10(first["x_samples_evaluated"]) - 5)  # log-linear between our two points
    assert abs(score.loc["test", "worst_delta"]) >= abs(ours - first["value"]) - 1e-3


def test_the_papers_train_curve_is_scored_against_our_running_average(tmp_path):
    """The paper's train curve is a running average of minibatch bounds: where a curve logged ours of that kind
    (rows of their own, NaN elsewhere), the scorecard compares the paper's train values with it, and the fresh
    train evaluation is tabulated but not scored."""
    folder = fake_run(tmp_path, "s", "nz3-seed0", [(100000, -300.0, -300.0), (1000000, -150.0, -150.0)], nz=3)
    nan = math.nan
    logged = pd.DataFrame(
        {
            "samples": [100000, 250000, 500000, 750000, 1000000],
            "train/elbo": [-300.0, nan, nan, nan, -150.0],
            "test/elbo": [-300.0, nan, nan, nan, -150.0],
            "train/running_elbo": [nan, -200.0, -160.0, -155.0, -152.0],
        }
    )
    logged.to_csv(folder / "metrics.csv", index=False)
    write_tables(gather(tmp_path), SETTINGS)
    score = pd.read_csv(tmp_path / "tables" / "fig2_scorecard.csv").set_index("split")
    assert score.loc["train", "points_compared"] == 0 and pd.isna(score.loc["train", "within_tolerance"])
    paper = load_paper()
    train = paper[
        (paper["panel"] == "MNIST Nz=3")
        & (paper["series"] == "AEVB train")
        & (paper["kind"] == "evaluation")
        & paper["x_samples_evaluated"].between(250000, 1000000)
    ]
    ours = [
        -200.0 + (-160.0 + 200.0) * (math.log10(x / 250000) / math.log10(2))
        if x <= 500000
        else -160.0 + 5.0 * (math.log10(x / 500000) / math.log10(1.5))
        if x <= 750000
        else -155.0 + 3.0 * (math.log10(x / 750000) / math.log10(4 / 3))
        for x in train["x_samples_evaluated"]
    ]
    deltas = [o - v for o, v in zip(ours, train["value"], strict=True)]
    assert score.loc["train_running", "points_compared"] == len(train) >= 2
    assert score.loc["train_running", "worst_delta"] == pytest.approx(max(deltas, key=abs), abs=1e-3)
    table = pd.read_csv(tmp_path / "tables" / "fig2.csv").set_index(["split", "samples"])
    assert table.loc[("train_running", 1000000), "elbo"] == -152.0
    assert table.loc[("train_running", 1000000), "paper_elbo"] == table.loc[("train", 1000000), "paper_elbo"]
    assert table.loc[("train", 1000000), "elbo"] == -150.0


def test_seeds_are_averaged_and_compared_with_the_paper(tmp_path):
    fake_run(tmp_path, "s", "nz5-seed0", [(100000, -170, -169), (1000000, -136, -135)], nz=5, seed=0)
    fake_run(tmp_path, "s", "nz5-seed1", [(100000, -172, -171), (1000000, -138, -141)], nz=5, seed=1)
    write_tables(gather(tmp_path), SETTINGS)
    fig2 = pd.read_csv(tmp_path / "tables" / "fig2.csv")
    row = fig2[(fig2["split"] == "test") & (fig2["samples"] == 1000000)].iloc[0]
    assert row["elbo"] == -138.0 and row["seeds"] == 2 and row["elbo_std"] == pytest.approx(math.sqrt(18), abs=1e-3)
    ref = paper_value(load_paper(), "MNIST Nz=5", "AEVB test", 1e6)  # between evaluations at 7.82e5 and 1.0152e6
    assert row["paper_elbo"] == pytest.approx(ref, abs=1e-3) and row["delta"] == pytest.approx(-138.0 - ref, abs=1e-3)
    score = pd.read_csv(tmp_path / "tables" / "fig2_scorecard.csv")
    assert set(score["split"]) == {"train", "test"} and (score["points_compared"] > 0).all()
    assert len(pd.read_csv(tmp_path / "tables" / "fig2_runs_used.csv")) == 2


def test_a_point_beyond_tolerance_fails_the_scorecard(tmp_path):
    # the paper's MNIST Nz=5 AEVB evaluations inside [5e5, 1e6]: train -152.12 at 5.426e5 and -145.17 at 7.82e5,
    # test -147.54 and -141.87; ours is interpolated there in log10(samples)
    fake_run(tmp_path, "s", "nz5-seed0", [(500000, -160, -150), (1000000, -150, -142)], nz=5)
    write_tables(gather(tmp_path), SETTINGS)
    score = pd.read_csv(tmp_path / "tables" / "fig2_scorecard.csv").set_index("split")
    assert not score.loc["train", "within_tolerance"] and score.loc["test", "within_tolerance"]
    assert score.loc["train", "points_compared"] == score.loc["test", "points_compared"] == 2
    ours = -160 + 10 * math.log10(782000 / 500000) / math.log10(2)
    assert score.loc["train", "worst_delta"] == pytest.approx(ours + 145.17, abs=1e-3)


def test_different_configs_under_one_curve_are_refused(tmp_path):
    fake_run(tmp_path, "s", "a", [(100000, -170, -169)], nz=5, lr=0.01)
    fake_run(tmp_path, "s", "b", [(100000, -170, -169)], nz=5, lr=0.1, seed=1)
    with pytest.raises(ReportError, match=r"differ in \['lr'\]"):
        write_tables(gather(tmp_path), SETTINGS)


def test_incomplete_runs_are_left_out_unless_asked(tmp_path):
    fake_run(tmp_path, "s", "done", [(100000, -170, -169)], nz=5)
    fake_run(tmp_path, "s", "half", [(100000, -180, -179)], complete=False, nz=10)
    write_tables(gather(tmp_path), SETTINGS)
    assert set(pd.read_csv(tmp_path / "tables" / "fig2.csv")["nz"]) == {5}
    write_tables(gather(tmp_path, include_incomplete=True), SETTINGS)
    used = pd.read_csv(tmp_path / "tables" / "fig2_runs_used.csv")
    assert set(used["nz"]) == {5, 10} and used.set_index("nz").loc[10, "complete"] == False  # noqa: E712


def test_no_runs_is_an_error_that_says_what_to_do(tmp_path):
    with pytest.raises(ReportError, match="--include-incomplete"):
        write_tables(gather(tmp_path), SETTINGS)


def test_figure_3_values_interpolate_linearly_in_samples():
    paper = load_paper()
    pts = paper[(paper["figure"] == 3) & (paper["panel"] == "Ntrain=1000") & (paper["series"] == "AEVB train")]
    at = pts.set_index("x_samples_evaluated")["value"]
    assert paper_value(paper, "Ntrain=1000", "AEVB train", 2e6, figure=3) == at[2e6]
    assert paper_value(paper, "Ntrain=1000", "AEVB train", 3e6, figure=3) == pytest.approx((at[2e6] + at[4e6]) / 2)
    assert math.isnan(paper_value(paper, "Ntrain=1000", "AEVB train", 1e6, figure=3))  # before the first point


MARGINAL = dict(metric="marginal", evaluation="marginal", hidden=100, nz=3, n_train=1000)


def test_figure_3_tables_compare_with_the_paper_and_rank_the_algorithms(tmp_path):
    fake_run(tmp_path, "f3", "aevb", [(2000000, -120.0, -144.0)], algorithm="aevb", **MARGINAL)
    fake_run(tmp_path, "f3", "ws", [(2000000, -140.0, -150.0)], algorithm="wakesleep", **MARGINAL)
    # MCEM's iterations count 15 * 1000 samples: a budget of 2e6 ends at the whole iteration 2.01e6
    fake_run(tmp_path, "f3", "mcem", [(2010000, -125.0, -140.0)], algorithm="mcem", **MARGINAL)
    write_tables(gather(tmp_path), SETTINGS)
    assert not (tmp_path / "tables" / "fig2.csv").exists()
    fig3 = pd.read_csv(tmp_path / "tables" / "fig3.csv")
    row = fig3[(fig3["algorithm"] == "aevb") & (fig3["split"] == "train")].iloc[0]
    ref = paper_value(load_paper(), "Ntrain=1000", "AEVB train", 2e6, figure=3)
    assert row["n_train"] == 1000 and row["paper_marginal"] == ref and row["delta"] == pytest.approx(-120.0 - ref)
    order = pd.read_csv(tmp_path / "tables" / "fig3_order.csv").set_index("split")
    assert order.loc["train", "ours"] == "AEVB -120.0 > MCEM -125.0 > WS -140.0"
    assert order.loc["test", "ours"].startswith("MCEM -140.0 > AEVB")


def test_a_figure_3_ablation_is_tabulated_with_the_marginal_likelihood(tmp_path):
    fake_run(
        tmp_path,
        "ablation-f3",
        "lr0.01",
        [(2000000, -120.0, -144.0), (4000000, -118.0, -142.0)],
        algorithm="aevb",
        lr=0.01,
        **MARGINAL,
    )
    write_tables(gather(tmp_path), SETTINGS)
    assert not (tmp_path / "tables" / "fig3.csv").exists()
    table = pd.read_csv(tmp_path / "tables" / "ablations.csv")
    assert set(table["metric"]) == {"marginal"} and table["value"].tolist() == [-118.0, -142.0]  # the last point
    paper = load_paper()
    refs = {
        (split, x): paper_value(paper, "Ntrain=1000", f"AEVB {split}", x, figure=3)
        for split in ("train", "test")
        for x in (2e6, 4e6)
    }
    compared = pd.read_csv(tmp_path / "tables" / "ablations_paper.csv").set_index("split")
    assert compared.loc["test", "points"] == 2
    assert compared.loc["test", "mean_delta"] == pytest.approx(
        (-144.0 - refs["test", 2e6] - 142.0 - refs["test", 4e6]) / 2, abs=1e-3
    )


def test_ablation_sweeps_get_their_own_table_and_stay_out_of_the_scorecards(tmp_path):
    """Runs of one ablation sweep may differ in config (that is the point); each is a row, its varied keys named."""
    fake_run(tmp_path, "fig2-x", "nz5-seed0", [(1000000, -136, -135)], nz=5)
    fake_run(
        tmp_path,
        "ablation-lr",
        "lr0.1",
        [(100000, -170, -169), (1000000, -150, -140), (2000000, -145, -139)],
        nz=5,
        lr=0.1,
    )
    fake_run(tmp_path, "ablation-lr", "lr0.001", [(1000000, -160, -161)], nz=5, lr=0.001)
    write_tables(gather(tmp_path), SETTINGS)
    assert set(pd.read_csv(tmp_path / "tables" / "fig2.csv")["sweep"]) == {"fig2-x"}
    assert set(pd.read_csv(tmp_path / "tables" / "fig2_scorecard.csv")["sweep"]) == {"fig2-x"}
    table = pd.read_csv(tmp_path / "tables" / "ablations.csv")
    assert set(table["varied"]) == {"lr=0.1", "lr=0.001"}
    fast = table[(table["run"] == "lr0.1") & (table["split"] == "test")].set_index("samples")
    assert list(fast.index) == [1000000, 2000000]  # the table point and the last point, not 1e5
    ref = paper_value(load_paper(), "MNIST Nz=5", "AEVB test", 1e6)
    assert fast.loc[1000000, "paper_value"] == pytest.approx(ref, abs=1e-3)
    assert fast.loc[1000000, "delta"] == pytest.approx(-140 - ref, abs=1e-3)
    # at the paper's own evaluations between 1e5 and 2e6, ours interpolated in log-samples there
    compared = pd.read_csv(tmp_path / "tables" / "ablations_paper.csv").set_index(["run", "split"])
    paper = load_paper()
    pts = paper[
        (paper["panel"] == "MNIST Nz=5")
        & (paper["series"] == "AEVB test")
        & (paper["kind"] == "evaluation")
        & paper["x_samples_evaluated"].between(1e5, 2e6)
    ]
    x = pts["x_samples_evaluated"].to_numpy()
    ours = np.interp(np.log10(x), [5, 6, math.log10(2e6)], [-169, -140, -139])
    row = compared.loc[("lr0.1", "test")]
    assert row["points"] == len(x) and row["first"] == int(x[0]) and row["last"] == int(x[-1])
    assert row["mean_delta"] == pytest.approx(float(np.mean(ours - pts["value"])), abs=1e-3)
    assert row["mean_abs_delta"] == pytest.approx(float(np.mean(np.abs(ours - pts["value"]))), abs=1e-3)
    assert ("lr0.001", "test") not in compared.index  # one point, at 1e6: no paper evaluation lies exactly there


def test_user_runs_are_tabulated_beside_the_reference_runs(tmp_path, capsys):
    user, reference = tmp_path / "results", tmp_path / "reference"
    fake_run(user, "s", "nz5-seed0", [(100000, -170, -169), (1000000, -136, -135)], nz=5)
    fake_run(reference, "s", "nz5-seed0", [(100000, -171, -168), (1000000, -137, -139)], nz=5)
    fake_run(reference, "s", "nz3-seed0", [(1000000, -150, -151)], nz=3)  # a curve the user has not run
    main(["tables", "--results-dir", str(user), "--reference", str(reference), "--settings", str(settings(tmp_path))])
    fig2 = pd.read_csv(user / "tables" / "fig2.csv").set_index(["split", "samples"])
    assert set(fig2["nz"]) == {5}
    assert fig2.loc[("test", 1000000), "reference_elbo"] == -139.0
    assert fig2.loc[("test", 1000000), "delta_reference"] == pytest.approx(4.0)
    assert fig2.loc[("train", 100000), "delta_reference"] == pytest.approx(1.0)
    assert not (reference / "tables").exists()


def test_without_user_runs_the_reference_is_shown_alone(tmp_path, capsys):
    user, reference = tmp_path / "results", tmp_path / "reference"
    fake_run(reference, "s", "nz5-seed0", [(100000, -171, -168), (1000000, -137, -139)], nz=5)
    assert (
        main(
            ["tables", "--results-dir", str(user), "--reference", str(reference), "--settings", str(settings(tmp_path))]
        )
        == 0
    )
    assert "showing the committed reference runs" in capsys.readouterr().out
    fig2 = pd.read_csv(reference / "tables" / "fig2.csv")
    assert "reference_elbo" not in fig2 and len(fig2) == 4
    assert not user.exists()


def settings(tmp_path):
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump(SETTINGS))
    return path


def test_three_seeds_give_the_mean_the_sd_and_a_95_percent_t_interval(tmp_path):
    # test bounds at 1e6 of -137, -138, -139: mean -138, sd 1, t(0.975, 2) = 4.302653 -> half-width 2.484138
    for seed, value in enumerate([-137.0, -138.0, -139.0]):
        fake_run(tmp_path, "s", f"nz5-seed{seed}", [(1000000, -136.0, value)], nz=5, seed=seed)
    write_tables(gather(tmp_path), SETTINGS)
    fig2 = pd.read_csv(tmp_path / "tables" / "fig2.csv").set_index("split")
    row = fig2.loc["test"]
    assert row["elbo"] == -138.0 and row["elbo_std"] == 1.0 and row["seeds"] == 3
    assert row["elbo_ci_low"] == pytest.approx(-138 - 2.484138, abs=1e-3)
    assert row["elbo_ci_high"] == pytest.approx(-138 + 2.484138, abs=1e-3)
    ref = paper_value(load_paper(), "MNIST Nz=5", "AEVB test", 1e6)
    assert row["delta_ci_low"] == pytest.approx(-138 - 2.484138 - ref, abs=1e-3)
    train = fig2.loc["train"]  # three equal values: an interval of width zero
    assert train["elbo_ci_low"] == train["elbo_ci_high"] == -136.0


def test_one_seed_has_no_interval(tmp_path):
    fake_run(tmp_path, "s", "nz5-seed0", [(1000000, -136.0, -137.0)], nz=5)
    write_tables(gather(tmp_path), SETTINGS)
    fig2 = pd.read_csv(tmp_path / "tables" / "fig2.csv")
    assert fig2["elbo_ci_low"].isna().all() and fig2["delta_ci_high"].isna().all()


def test_a_missing_value_is_a_dash_in_markdown_and_an_empty_cell_in_csv(tmp_path):
    fake_run(tmp_path, "s", "nz5-seed0", [(1000000, -136.0, -137.0)], nz=5)  # one seed: no sd, no interval
    write_tables(gather(tmp_path), SETTINGS)
    md = (tmp_path / "tables" / "fig2.md").read_text()
    assert "nan" not in md and "—" in md
    header, rule, *rows = md.splitlines()
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in rows[0].split("|")], strict=True))
    aligned = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in rule.split("|")], strict=True))
    assert cells["elbo_std"] == cells["elbo_ci_low"] == "—" and cells["elbo"] == "-136.00"
    assert aligned["elbo_std"].endswith(":")  # a column with no value is aligned as the numbers it would hold
    csv = (tmp_path / "tables" / "fig2.csv").read_text().splitlines()
    columns, first = csv[0].split(","), csv[1].split(",")
    assert first[columns.index("elbo_std")] == "" and first[columns.index("elbo")] == "-136.000"


def test_markdown_writes_every_missing_value_as_a_dash():
    from vae.results.markdown import markdown

    table = pd.DataFrame({"name": ["a", None], "value": [1.234, math.nan], "ok": [True, None]})
    lines = markdown(table).splitlines()
    assert [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:]] == [
        ["a", "1.23", "True"],
        ["—", "—", "—"],
    ]


def test_tables_and_figures_read_each_folder_of_runs_in_the_results_folder(tmp_path, capsys):
    results, reference = tmp_path / "results", tmp_path / "reference"
    fake_run(results / "smoke", "smoke", "nz3-seed0", [(20000, -190, -189), (100000, -170, -169)], nz=3)
    fake_run(results, "s", "nz5-seed0", [(1000000, -136, -137)], nz=5)
    fake_run(results / "variants", "s", "nz5-seed0", [(1000000, -130, -131)], nz=5, lr=0.1)  # a sweep of one name
    fake_run(results / "gpu" / "tf32", "s", "nz5-seed0", [(1000000, -120, -121)], nz=5)  # two deep: not read
    fake_run(reference, "s", "nz5-seed0", [(1000000, -138, -139)], nz=5)
    assert (
        main(
            [
                "tables",
                "--results-dir",
                str(results),
                "--reference",
                str(reference),
                "--settings",
                str(settings(tmp_path)),
            ]
        )
        == 0
    )
    read = f"runs read from {results}/runs, {results}/smoke/runs, {results}/variants/runs, beside the reference"
    assert read in capsys.readouterr().out
    used = pd.read_csv(results / "tables" / "fig2_runs_used.csv")
    assert sorted(used["sweep"]) == ["s", "smoke/smoke", "variants/s"]
    fig2 = pd.read_csv(results / "tables" / "fig2.csv").set_index(["sweep", "split", "samples"])
    assert fig2.loc[("variants/s", "test", 1000000), "elbo"] == -131
    assert fig2.loc[("variants/s", "test", 1000000), "reference_elbo"] == -139  # matched by the sweep's own name
    assert fig2.loc[("smoke/smoke", "test", 100000), "elbo"] == -169
    assert main(["figures", "--results-dir", str(results), "--reference", str(reference), "--no-wandb"]) == 0
    assert read in capsys.readouterr().out and (results / "figures" / "fig2.png").is_file()
