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


def test_figures_without_runs_fail_with_a_message(tmp_path, capsys):
    assert main(["figures", "--results-dir", str(tmp_path)]) == 2
    assert "no complete runs" in capsys.readouterr().err
