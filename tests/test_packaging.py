"""What pip installs: the distribution's name, and the README's install lines."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_distribution_is_encodec_cli():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^name = "encodec-cli"', text, re.M)
    for path in (ROOT / "encodec_cli").rglob("*.py"):
        assert "'ecdc[" not in path.read_text(), path  # that package is another project


def test_readme_installs_the_cpu_build_first():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Install", 1)[1].split("```console", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    assert lines[0].startswith("pip install torch --index-url https://download.pytorch.org/whl/cpu")
    assert lines[1].startswith("pip install .")


def test_the_readme_is_short_and_its_links_resolve():
    """A newcomer's five minutes: at most 300 lines; every relative link names a file here."""
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = md.read_text()
        if md.name == "README.md":
            assert len(text.splitlines()) <= 300
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if not target.startswith(("http://", "https://")):
                assert (md.parent / target).exists(), (md.name, target)


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Development", 1)[1].split("```console", 1)[1].split("```", 1)[0]
    command = [line for line in block.splitlines() if "pytest" in line][0].strip()
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
