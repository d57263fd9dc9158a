"""The paper's number, not just a trend: Nz=10 at 1e6 samples against Figure 2 (slow: about a minute)."""

import pandas as pd
import pytest

from vae.config import RunSpec, make_config
from vae.results.paper import load_paper, paper_value
from vae.runs.train import run_one


@pytest.mark.slow
def test_nz10_test_bound_at_1e6_samples_is_within_6_nats_of_figure_2(tmp_path, data_root):
    cfg = make_config({"nz": 10, "budget": 1_000_000, "wandb": "disabled"})
    run_one("paper", RunSpec("nz10", cfg), tmp_path, data_root)
    m = pd.read_csv(tmp_path / "runs" / "paper" / "nz10" / "metrics.csv").set_index("samples")
    paper = paper_value(load_paper(), "MNIST Nz=10", "AEVB test", 1e6)
    assert abs(m.loc[1_000_000, "test/elbo"] - paper) < 6.0
