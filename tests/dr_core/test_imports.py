"""Dependency direction (architecture.md rule 1), checked on the code as it is."""
import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# safetensors is the checkpoint/model file format itself (architecture.md rule 9).
DR_CORE_ALLOWED = {"torch", "numpy", "safetensors", "dr_core", "__future__"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_dr_core_imports_only_torch_numpy_and_stdlib():
    offenders = {}
    # Examples may use scikit-learn's bundled data sets; the library itself may not.
    for path in (ROOT / "dr_core").rglob("*.py"):
        if "examples" in path.relative_to(ROOT / "dr_core").parts:
            continue
        bad = _imported_roots(path) - DR_CORE_ALLOWED - set(sys.stdlib_module_names)
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_importing_every_dr_core_module_pulls_no_forbidden_package():
    code = """
import json, pkgutil, importlib, sys
import dr_core
for m in pkgutil.walk_packages(dr_core.__path__, "dr_core."):
    if not m.name.startswith("dr_core.examples"):
        importlib.import_module(m.name)
print(json.dumps(sorted({n.split(".")[0] for n in sys.modules})))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert {"sklearn", "fastapi", "sqlalchemy", "celery", "api", "worker"} & loaded == set()


def test_api_never_imports_torch():
    code = """
import json, pkgutil, importlib, sys
import api
names = [m.name for m in pkgutil.walk_packages(api.__path__, "api.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "torch": "torch" in sys.modules}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["modules"], "no api modules found"
    assert report["torch"] is False
