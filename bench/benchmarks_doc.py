"""docs/benchmarks.md is shared: each bench owns the part between its begin/end markers."""
from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(text: str, begin: str, end: str, doc: Path = DOC) -> None:
    """Replace the part of ``doc`` from ``begin`` to ``end`` (and its newline) with ``text``,
    which carries the markers itself; append it when the doc has no such part yet."""
    old = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin in old and end in old:
        new = old[:old.index(begin)] + text + old[old.index(end) + len(end) + 1:]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    doc.write_text(new)
