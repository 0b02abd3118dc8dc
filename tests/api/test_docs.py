"""Docs that work offline and match the code: every operation and JobSpec field documented,
docs/api.md regenerated, Swagger UI and ReDoc served from the package, no link leaving the
repository."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts import gen_api_docs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def schema() -> dict:
    return gen_api_docs.openapi()


def test_docs_api_md_is_current(schema: dict) -> None:
    current = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert current == gen_api_docs.render(schema), \
        "docs/api.md is stale: run python scripts/gen_api_docs.py"


def test_every_operation_has_a_summary_and_a_description(schema: dict) -> None:
    ops = [(m, p, op) for p, item in schema["paths"].items() for m, op in item.items()]
    assert len(ops) >= 18
    bare = [(m, p) for m, p, op in ops
            if not op.get("summary") or len(op.get("description", "")) < 20]
    assert bare == []


def _leaves(schema: dict, name: str, prefix: str = "") -> list[tuple[str, dict]]:
    out = []
    for field, prop in schema["components"]["schemas"][name]["properties"].items():
        refs = [n["$ref"].rsplit("/", 1)[-1] for n in [prop, *prop.get("anyOf", [])] if "$ref" in n]
        refs = [r for r in refs if r != "SampledPairs"]
        if refs:
            for ref in refs:
                out += _leaves(schema, ref, f"{prefix}{field}.")
        else:
            out.append((prefix + field, prop))
    return out


def test_every_jobspec_field_has_a_description_and_an_example(schema: dict) -> None:
    leaves = _leaves(schema, "JobSpec")
    assert len(leaves) >= 30
    missing = [path for path, prop in leaves if not prop.get("description") or "examples" not in prop]
    assert missing == []


@pytest.mark.parametrize("page, asset", [("/docs", "swagger-ui-bundle.js"),
                                         ("/redoc", "redoc.standalone.js")])
def test_docs_pages_load_only_local_assets(client, page: str, asset: str) -> None:
    html = client.get(page).text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert urls and all(u.startswith("/") for u in urls), urls
    assert "https://" not in html.replace("https://drtrain.dev", "")
    resp = client.get(f"/docs-assets/{asset}")
    assert resp.status_code == 200 and len(resp.content) > 100_000
    assert client.get("/docs-assets/..%2Fweb.py").status_code == 404


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "web").glob("*.md"))]


def test_no_doc_link_leaves_the_repository() -> None:
    bad = []
    for md in _markdown_files():
        for target in re.findall(r"\]\(([^)\s]+)\)", md.read_text(encoding="utf-8")):
            if target.startswith("#"):
                continue
            if re.match(r"[a-z]+://", target):
                bad.append((md.name, target))
                continue
            resolved = (md.parent / target.split("#")[0]).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                bad.append((md.name, target))
    assert bad == []
