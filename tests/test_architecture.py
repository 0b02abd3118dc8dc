"""The import graph, read from the source (function-level imports included): no circles, and
the edges of docs/architecture.md that import-linter's contracts (pyproject.toml) do not state.

import-linter checks the layers; ``.ci/run`` runs it, and so does the last test here, so a
broken contract also fails the README's test command.
"""
from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "worker", "dr_core", "drtrain", "drtrain_cli", "drtrain_client", "drtrain_study",
            "bench", "migrations")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Internal modules that ``module`` imports anywhere in its body."""
    out: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports the submodule when there is one.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            found = _resolve(target, known)
            if found and found != module:
                out.add(found)
    return out


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def _package_inits_ignored(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ re-exporting its own submodules is not a circle worth naming."""
    return {m: {t for t in ts if not (m.startswith(t + ".") and t in graph)}
            for m, ts in graph.items()}


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "drtrain.jobs.service" in graph["api.routers.jobs"]
    assert "drtrain.datasets.builtins" in graph["drtrain.datasets.loading"]


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    assert _cycles(_package_inits_ignored(import_graph())) == []


def test_api_is_imported_only_by_api_and_tests() -> None:
    outside = {m: sorted(t for t in ts if t == "api" or t.startswith("api."))
               for m, ts in import_graph().items() if not m.startswith("api")}
    assert {m: ts for m, ts in outside.items() if ts} == {}


def test_worker_takes_nothing_from_api() -> None:
    graph = import_graph()
    assert not {t for m, ts in graph.items() if m.startswith("worker") for t in ts
                if t.startswith("api")}


def _edits_sys_path(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr == "path" and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            return True
    return False


def test_no_module_edits_sys_path() -> None:
    """Packages are imported by name (installed, or run with ``python -m`` from the repository
    root), never found by a path a module adds to ``sys.path``."""
    assert sorted(name for name, path in _modules().items() if _edits_sys_path(path)) == []


def test_importing_the_domain_loads_no_torch() -> None:
    code = """
import importlib, json, pkgutil, sys
import drtrain
names = [m.name for m in pkgutil.walk_packages(drtrain.__path__, "drtrain.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted({n.split(".")[0] for n in sys.modules})}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report["modules"]) > 10
    assert {"torch", "dr_core", "api", "worker", "fastapi"} & set(report["loaded"]) == set()


def test_import_linter_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is a test dependency (pyproject.toml [test])"
    out = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]


# What makes code infrastructure: starting threads or processes, or driving a DBAPI cursor.
_INFRASTRUCTURE = re.compile(
    r"threading\.Thread\(|ThreadPoolExecutor|ProcessPoolExecutor|\.cursor\(|LISTEN\b")


def test_domain_packages_hold_no_infrastructure() -> None:
    """drtrain/jobs, sweeps and tenants hold what a job, a sweep or a tenant *is*; threads,
    processes and raw cursors live in drtrain/kit (docs/architecture.md)."""
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for package in ("jobs", "sweeps", "tenants")
             for path in sorted((ROOT / "drtrain" / package).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if _INFRASTRUCTURE.search(line)]
    assert not found, "infrastructure in the domain:\n" + "\n".join(found)
