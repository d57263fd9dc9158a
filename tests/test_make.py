"""``make help`` lists every target of the Makefile, one line each, from the Makefile itself; paths with spaces."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_make_help_lists_every_target_with_a_line_of_text():
    targets = re.findall(r"^([a-z0-9-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
    assert {"test", "reproduce-mnist", "bench", "gpu-check", "help"} <= set(targets)
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "help"], capture_output=True, text=True, check=True).stdout
    listed = {line.split()[1]: line.split(None, 2)[2] for line in out.splitlines()}
    assert set(listed) == set(targets)
    assert all(len(text) > 10 for text in listed.values())


def test_paths_with_spaces_reach_the_commands_whole(tmp_path):
    """RESULTS, DATA and REFERENCE are quoted in every recipe; the commands are caught by a stand-in for python
    (``-o install``: the virtual environment is taken as it is)."""
    results, data = tmp_path / "my results", tmp_path / "my data"
    (results / "runs" / "fig2-x" / "run 1" / "checkpoints").mkdir(parents=True)
    (results / "runs" / "fig2-x" / "run 1" / "checkpoints" / "last.ckpt").touch()
    argv = tmp_path / "argv.py"
    argv.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")

    def make(target: str) -> list[str]:
        out = subprocess.run(
            [
                "make",
                "-s",
                "-o",
                "install",
                "-C",
                str(ROOT),
                target,
                f"RESULTS={results}",
                f"DATA={data}",
                f"REFERENCE={tmp_path / 'the reference'}",
                f"PY={sys.executable} {argv}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(out.splitlines()[0])

    assert make("log-px") == [
        "-m",
        "vae",
        "log-px",
        str(results / "runs" / "fig2-x" / "run 1"),
        "--data-dir",
        str(data),
    ]
    for target in ("tables", "figures"):
        assert make(target) == [
            "-m",
            "vae",
            target,
            "--results-dir",
            str(results),
            "--reference",
            str(tmp_path / "the reference"),
        ]
    train = make("reproduce-mnist")
    assert train[:9] == [
        "-m",
        "vae",
        "train",
        "--results-dir",
        str(results),
        "--data-dir",
        str(data),
        "--reference",
        str(tmp_path / "the reference"),
    ]
    assert make("smoke")[4:8] == ["--results-dir", str(results / "smoke"), "--data-dir", str(data)]
