"""tests/ mirrors the code: tests/drtrain/<package> tests that package of the domain without
the API, and every module in tests/api reaches the API (over HTTP, or its own code directly).

Read from the source, so a domain test written into tests/api, or an HTTP test into
tests/drtrain, fails here before anyone has to look for it.
"""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# What reaches the API: its fixtures, its code, a test client, a real API process (an HTTP
# client alone does not: tests/drtrain/kit talks to an S3 server with one).
API_FIXTURES = {"client", "app", "embedded"}  # embedded: a TestClient of the SQLite app
API_IMPORTS = ("api", "fastapi.testclient", "bench.uploads")
def _imported_modules(tree: ast.Module) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def _requested_fixtures(tree: ast.Module) -> set[str]:
    """Parameter names of every function: what tests and fixtures ask pytest for."""
    return {arg.arg for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for arg in node.args.args + node.args.kwonlyargs}


def reaches_the_api(source: str) -> bool:
    tree = ast.parse(source)
    imports = _imported_modules(tree)
    uses_import = any(m == p or m.startswith(p + ".") for m in imports for p in API_IMPORTS)
    return uses_import or bool(_requested_fixtures(tree) & API_FIXTURES)


def _test_modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("test_*.py"))


def test_the_check_tells_an_http_test_from_a_domain_test() -> None:
    assert reaches_the_api("def test_x(client):\n    client.get('/v1/jobs')\n")
    assert reaches_the_api("from api.events import Poller\n")
    assert not reaches_the_api("from drtrain.jobs.spec import JobSpec\ndef test_x(db): ...\n")
    assert not reaches_the_api("from apiary import bees\n")


def test_every_api_test_module_reaches_the_api() -> None:
    modules = _test_modules(TESTS / "api")
    assert len(modules) > 10
    domain_only = [p.name for p in modules if not reaches_the_api(p.read_text())]
    assert domain_only == [], f"these test the domain only: move them to tests/drtrain/: {domain_only}"


def test_domain_tests_mirror_drtrain_and_leave_the_api_alone() -> None:
    folders = [p for p in (TESTS / "drtrain").iterdir() if p.is_dir() and p.name != "__pycache__"]
    assert folders, "tests/drtrain has no package folder"
    for folder in folders:
        assert (ROOT / "drtrain" / folder.name / "__init__.py").exists(), \
            f"tests/drtrain/{folder.name} mirrors no package of drtrain/"
    http = [str(p.relative_to(TESTS)) for p in _test_modules(TESTS / "drtrain")
            if reaches_the_api(p.read_text())]
    assert http == [], f"these reach the API: move them to tests/api/: {http}"
