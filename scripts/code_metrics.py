"""Size and coupling figures of the code base, for before/after comparisons of a refactor.

    python scripts/code_metrics.py [ROOT]

Prints the lines of each package, the largest modules, every function over 60 lines, the
lines in bench/, how many modules restate a list that has one source (the job statuses of
``drtrain.kit.models.JobStatus``, the divergences and distances of ``dr_core.config``), and
how many names the worker imports from the API package. ROOT (default: this checkout) may
be another checkout, an older one included: the lists are those of the installed package
(``pip install -e .`` of this checkout).
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from dr_core.config import DISTANCES, DIVERGENCES
from drtrain.kit.models import JobStatus

HERE = Path(__file__).resolve().parents[1]

PACKAGES = ("api", "worker", "dr_core", "drtrain", "drtrain_cli", "drtrain_client",
            "drtrain_study", "bench", "migrations")
# Where copies of a list may hide: the packages, the web app's source and the tests.
SEARCHED = (*PACKAGES, "web/src", "tests")
LISTS = {"job statuses": tuple(JobStatus), "divergences": DIVERGENCES, "distances": DISTANCES}
# The modules that are each list's one source.
SOURCES = {"job statuses": "drtrain/kit/models.py", "divergences": "dr_core/config.py",
           "distances": "dr_core/config.py"}


def modules(root: Path) -> list[Path]:
    return [p for pkg in PACKAGES if (root / pkg).is_dir() for p in (root / pkg).rglob("*.py")
            if "__pycache__" not in p.parts]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def restating(root: Path, names: tuple[str, ...]) -> list[str]:
    """Modules other than the list's source naming at least all but one of its names as
    quoted literals: a copy of the list that can drift from its source."""
    quoted = [re.compile(rf"[\"']{re.escape(str(n))}[\"']") for n in names]
    found = []
    for folder in SEARCHED:
        base = root / folder
        if not base.is_dir():
            continue
        for path in base.rglob("*"):
            if path.suffix not in (".py", ".ts", ".tsx") or "node_modules" in path.parts:
                continue
            text = path.read_text()
            if sum(bool(q.search(text)) for q in quoted) >= max(2, len(names) - 1):
                found.append(str(path.relative_to(root)))
    return sorted(found)


def _functions_over_60(root: Path, files: list[Path]) -> list[tuple[int, str]]:
    long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > 60:
                    long.append((length, f"{path.relative_to(root)}:{node.name}"))
    return sorted(long, reverse=True)


def _worker_imports_from_api(root: Path, files: list[Path]) -> list[tuple[str, str]]:
    taken = []
    for path in files:
        if path.relative_to(root).parts[0] != "worker":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.ImportFrom) and node.module
                    and node.module.split(".")[0] == "api"):
                taken += [(node.module, alias.name) for alias in node.names]
    return taken


def main(argv: list[str]) -> int:
    root = Path(argv[0]).resolve() if argv else HERE
    files = modules(root)
    print("lines per package:")
    for pkg in PACKAGES:
        in_pkg = [p for p in files if p.relative_to(root).parts[0] == pkg]
        print(f"  {sum(map(_lines, in_pkg)):6d}  {pkg}/ ({len(in_pkg)} modules)")
    sizes = sorted(((_lines(p), p.relative_to(root)) for p in files), reverse=True)
    print("largest modules (lines):")
    for n, path in sizes[:5]:
        print(f"  {n:5d}  {path}")
    long = _functions_over_60(root, files)
    print(f"functions over 60 lines: {len(long)}")
    for length, name in long:
        print(f"  {length:4d}  {name}")
    for list_name, names in LISTS.items():
        copies = [m for m in restating(root, names) if m != SOURCES[list_name]]
        print(f"modules restating the {list_name} (outside {SOURCES[list_name]}): {len(copies)}")
        for module in copies:
            print(f"  {module}")
    taken = _worker_imports_from_api(root, files)
    print(f"names the worker imports from api: {len(taken)} "
          f"({len(set(taken))} distinct, from {len({m for m, _ in taken})} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
