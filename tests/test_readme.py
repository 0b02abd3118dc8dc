"""The README stays a short front page that is true: CI runs its test command as written, and it
links every document, so nothing in docs/ is reachable only by listing the folder."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _readme_command(title: str) -> str:
    block = README.split(f"**{title}**", 1)[1].split("```bash\n", 1)[1]
    return block.split("\n```", 1)[0]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    marker = next(i for i, line in enumerate(ci) if "identical to the README" in line)
    assert ci[marker + 1] == _readme_command("Install and run the tests")


def test_the_readme_links_every_document() -> None:
    docs = [f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md"))] + ["CHANGELOG.md"]
    unlinked = [d for d in docs if f"]({d})" not in README]
    assert unlinked == []


def test_the_readme_stays_short() -> None:
    assert len(README.splitlines()) <= 120, "move detail to docs/ and link it"
