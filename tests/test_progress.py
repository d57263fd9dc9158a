"""Every long phase shows where it stands: §5's step-size selection, an evaluation's HMC chains, a block of MCEM
iterations and ``log-px`` print a heartbeat line without a terminal; on one, the lines a training prints leave
its progress bar whole."""

import io
import re
import sys

from vae.__main__ import main
from vae.config import RunSpec, make_config
from vae.runs.folder import RunFolder
from vae.runs.train import run_one

BEAT = 1e-6  # heartbeat_seconds: a line at every point the display is offered one
TINY = dict(
    hidden=20,
    nz=2,
    n_train=2000,
    budget=10000,
    eval_start=5000,
    lr_select_samples=5000,
    adagrad_warmup=10,
    wandb="disabled",
    heartbeat_seconds=BEAT,
)
# Figure 3's estimator on 50 points: 4 + 6 HMC transitions per chain, for the train and the test set
MARGINAL = dict(evaluation="marginal", marginal_points=50, marginal_samples=6, marginal_burnin=4, marginal_leapfrog=2)


def heartbeats(out: str, title: str) -> list[str]:
    return [line[len(title) + 2 :] for line in out.splitlines() if line.startswith(f"{title}: ")]


def test_the_step_size_selection_and_an_evaluations_hmc_chains_show_their_progress(tmp_path, data_root, capsys):
    """Three step sizes side by side for 50 iterations; then at each evaluation point 2 x 10 HMC steps."""
    run_one("s", RunSpec("r", make_config(dict(TINY, **MARGINAL))), tmp_path, data_root)
    beats = heartbeats(capsys.readouterr().out, "s/r")
    selecting = [b for b in beats if b.startswith("selecting the step size: ")]
    assert selecting[0] == "selecting the step size: iteration 1/50"
    assert selecting[-1] == "selecting the step size: iteration 50/50" and len(selecting) == 50
    for point in ("5,000", "10,000"):
        evaluating = [b for b in beats if b.startswith(f"evaluating at {point}: ")]
        assert evaluating == [f"evaluating at {point}: HMC step {i}/20" for i in range(1, 21)]
    assert any(re.match(r"[\d,]+ / 10,000 samples", b) for b in beats)  # and training between


def test_a_block_of_mcem_iterations_shows_each_iteration_and_its_prior_started_chains(tmp_path, data_root, capsys):
    """A training step holds 10 MCEM iterations (of 1,000 samples) up to the next evaluation point: each shows
    itself. The chains of its evaluation start from the best of 1,000 prior draws (10 chunks) before their
    10 transitions."""
    cfg = make_config(
        dict(
            TINY,
            **MARGINAL,
            algorithm="mcem",
            n_train=500,
            lr=0.02,
            mcem_leapfrog=1,
            mcem_msteps=1,
            adagrad_warmup=2,
            budget=20000,
            eval_start=10000,
            eval_every=10000,
            eval_spacing="linear",
        )
    )
    run_one("s", RunSpec("m", cfg), tmp_path, data_root)
    beats = heartbeats(capsys.readouterr().out, "s/m")
    assert any(b.startswith("3,000 / 20,000 samples") for b in beats)  # inside the first block
    assert [b for b in beats if b.startswith("evaluating at 10,000: ")][-1] == "evaluating at 10,000: HMC step 40/40"


def test_log_px_shows_its_importance_sampling(tmp_path, data_root, capsys):
    run_one("t", RunSpec("r", make_config(dict(TINY, lr=0.02))), tmp_path, data_root)
    run = RunFolder.of(tmp_path, "t", "r").path
    capsys.readouterr()
    assert main(["log-px", str(run), "--k", "300", "--points", "20", "--data-dir", str(data_root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [f"log p(x) of t/r: chunk {i}/3" for i in (1, 2, 3)] and "log p(x)" in out[3]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_printed_while_training_on_a_terminal_leave_the_progress_bar_whole(tmp_path, data_root, monkeypatch):
    """stdout and stderr on one terminal, as in a shell: the selection's and the evaluations' lines start a line
    of their own (tqdm clears the bar first, then draws it again below), none continues the bar's."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    run_one("s", RunSpec("r", make_config(dict(TINY, heartbeat_seconds=60.0))), tmp_path, data_root)
    text = terminal.getvalue()
    starts = [m.start() for m in re.finditer(r"\[r\] ", text)]
    assert len(starts) >= 4 and "Adagrad step size" in text and "s/r:" in text  # selection, 3 points, the bar
    assert all(text[i - 1] in "\r\n" for i in starts), [text[i - 40 : i + 5] for i in starts]
