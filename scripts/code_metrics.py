"""Size and coupling figures of the code base, for before/after comparisons of a refactor.

    python scripts/code_metrics.py [ROOT]

Prints the five largest modules (lines), every function over 60 lines, and how many names
the worker imports from the API package (0 once the domain lives in drtrain/).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("api", "worker", "dr_core", "drtrain", "drtrain_cli", "drtrain_client", "drtrain_study",
            "bench", "migrations")


def modules(root: Path) -> list[Path]:
    return [p for pkg in PACKAGES if (root / pkg).is_dir() for p in (root / pkg).rglob("*.py")
            if "__pycache__" not in p.parts]


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1]
    files = modules(root)
    sizes = sorted(((len(p.read_text().splitlines()), p.relative_to(root)) for p in files),
                   reverse=True)
    print("largest modules (lines):")
    for n, path in sizes[:5]:
        print(f"  {n:5d}  {path}")
    long = []
    taken = []
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > 60:
                    long.append((length, f"{path.relative_to(root)}:{node.name}"))
            if path.relative_to(root).parts[0] == "worker" and isinstance(node, ast.ImportFrom) \
                    and node.module and node.module.split(".")[0] == "api":
                taken += [(node.module, alias.name) for alias in node.names]
    print(f"functions over 60 lines: {len(long)}")
    for length, name in sorted(long, reverse=True):
        print(f"  {length:4d}  {name}")
    print(f"names the worker imports from api: {len(taken)} "
          f"({len(set(taken))} distinct, from {len({m for m, _ in taken})} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
