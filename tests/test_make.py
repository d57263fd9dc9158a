"""``make help`` lists every target of the Makefile, one line each, from the Makefile itself."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_make_help_lists_every_target_with_a_line_of_text():
    targets = re.findall(r"^([a-z0-9-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
    assert {"test", "reproduce-mnist", "bench", "gpu-check", "help"} <= set(targets)
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "help"], capture_output=True, text=True, check=True).stdout
    listed = {line.split()[1]: line.split(None, 2)[2] for line in out.splitlines()}
    assert set(listed) == set(targets)
    assert all(len(text) > 10 for text in listed.values())
