"""The README is a front door and docs/ holds the rest: the README stays short, every relative link of the README
and of docs/*.md points at a file that exists, and every ``make <target>`` and ``python -m vae <command>`` they
name exists (in the Makefile; as a subcommand of ``python -m vae --help``)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", flags=re.S | re.M)
INLINE = re.compile(r"`([^`]+)`")  # may run over a line break
MAKE = re.compile(r"\bmake((?:[ \t]+(?:-[a-zA-Z]+|[a-z][a-z0-9-]*(?=[\s|),;.]|$)))+)", flags=re.M)
COMMAND = re.compile(r"python -m vae[ \t]+([a-z][a-z-]*)(?![\w/.-])")


def prose(text: str) -> str:
    """``text`` without its code (fenced blocks and inline spans), where a bracket is not a link."""
    return INLINE.sub("", FENCED.sub("", text))


def code(text: str) -> str:
    """The code of ``text``, one snippet a line: fenced blocks without their comments, and inline spans."""
    blocks = [line.split(" #", 1)[0] for block in FENCED.findall(text) for line in block.splitlines()]
    return "\n".join(blocks + INLINE.findall(FENCED.sub("", text)))


def ids(pages: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in pages]


def test_readme_is_at_most_15000_bytes():
    assert README.stat().st_size <= 15_000


def test_the_docs_pages_exist():
    names = {p.name for p in DOCS}
    assert {"protocol.md", "results.md", "performance.md", "reliability.md", "testing.md", "architecture.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_relative_link_resolves_to_a_file(page):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):  # https:, mailto:, an anchor
            continue
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.name}: links to missing files: {broken}"


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z0-9-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


def named_make_targets(text: str) -> set[str]:
    """The words after ``make`` in the code of ``text``, up to the first that is not a target (VAR=value, a
    path)."""
    named = set()
    for group in MAKE.findall(code(text)):
        named |= {word for word in group.split() if not word.startswith("-")}
    return named


def test_named_make_targets_are_recognised():
    assert named_make_targets(
        "`make reproduce-mnist SAMPLES=1e6`, which make runs; `make help`\n"
        "```bash\nmake tables figures  # make sense\n```\n"
    ) == {"reproduce-mnist", "tables", "figures", "help"}


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_make_target_named_exists(page):
    text = page.read_text()
    missing = named_make_targets(text) - makefile_targets()
    assert not missing, f"{page.name} names make targets the Makefile lacks: {sorted(missing)}"


@pytest.fixture(scope="module")
def subcommands() -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "vae", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True
    ).stdout
    choices = re.search(r"\{([a-z,-]+)\}", out)
    assert choices, out
    return set(choices.group(1).split(","))


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_python_m_vae_command_named_exists(page, subcommands):
    named = set(COMMAND.findall(code(page.read_text())))
    assert not named - subcommands, f"{page.name} names commands `python -m vae` lacks: {sorted(named - subcommands)}"


def test_the_readme_names_the_main_commands():
    text = README.read_text()
    for target in ("install", "smoke", "tables", "figures", "reproduce-mnist"):
        assert f"make {target}" in text
    assert "## Use the models in your own code" in text  # tests/test_reuse.py executes its example
    assert "@inproceedings" in text and "1312.6114" in text
