"""Render docs/api.md from the OpenAPI document the API serves (the one source of truth).

    python scripts/gen_api_docs.py          # rewrite docs/api.md
    python scripts/gen_api_docs.py --check  # exit 1 when docs/api.md is stale

tests/api/test_docs.py runs the check, so a route or JobSpec field changed without
regenerating fails the tests.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "api.md"
METHOD_ORDER = ("get", "post", "put", "patch", "delete", "head")


def openapi() -> dict[str, Any]:
    """The schema of an app built with default settings in a throwaway data folder."""
    # The installed package (pip install -e .), imported late: only rendering needs the app.
    from api.app import create_app
    from drtrain.kit.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=tmp))
        schema = app.openapi()
        app.state.engine.dispose()
    return schema


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _type_text(schema: dict[str, Any], node: dict[str, Any]) -> str:
    if "$ref" in node:
        return node["$ref"].rsplit("/", 1)[-1]
    if "enum" in node:
        return " \\| ".join(json.dumps(v) for v in node["enum"])
    if "const" in node:
        return json.dumps(node["const"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return " \\| ".join(_type_text(schema, n) for n in node[key])
    if node.get("type") == "array":
        return f"list[{_type_text(schema, node.get('items', {}))}]"
    return str(node.get("type", "any"))


def _bounds(node: dict[str, Any]) -> str:
    parts = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                      ("exclusiveMaximum", "<"), ("minLength", "len >="), ("maxLength", "len <="),
                      ("minItems", "items >="), ("maxItems", "items <=")):
        if key in node:
            parts.append(f"{sign} {node[key]}")
    for sub in node.get("anyOf", []):
        if sub.get("type") in ("array", "integer", "number", "string"):
            inner = _bounds(sub)
            if inner:
                parts.append(inner)
    return ", ".join(parts)


def _operation(schema: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}` — {op.get('summary', '')}", "",
             op.get("description", "").strip(), ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
        for p in params:
            desc = (p.get("description") or p.get("schema", {}).get("description") or "")
            lines.append(f"| `{p['name']}` | {p['in']} | {_type_text(schema, p.get('schema', {}))} | "
                         f"{'yes' if p.get('required') else 'no'} | {desc} |")
        lines.append("")
    body = op.get("requestBody", {}).get("content", {})
    if body:
        kinds = ", ".join(f"`{k}`" + (f" ({_type_text(schema, v['schema'])})" if "schema" in v else "")
                          for k, v in body.items())
        lines += [f"Body: {kinds}.", ""]
    responses = op.get("responses", {})
    if responses:
        lines.append("Answers: " + "; ".join(
            f"`{code}` {r.get('description', '')}".rstrip() for code, r in responses.items()) + ".")
        lines.append("")
    return lines


def _fields(schema: dict[str, Any], node: dict[str, Any], prefix: str) -> list[str]:
    rows = []
    for name, prop in _resolve(schema, node).get("properties", {}).items():
        path = f"{prefix}{name}"
        nested = [n for n in ([prop] + prop.get("anyOf", [])) if "$ref" in n]
        default = json.dumps(prop["default"]) if "default" in prop else ""
        example = json.dumps(prop["examples"][0]) if prop.get("examples") else ""
        rows.append(f"| `{path}` | {_type_text(schema, prop)} | {default} | {_bounds(prop)} | "
                    f"{example} | {prop.get('description', '')} |")
        for ref in nested:
            target = ref["$ref"].rsplit("/", 1)[-1]
            if target != "SampledPairs":
                rows += _fields(schema, ref, path + ".")
    return rows


def render(schema: dict[str, Any]) -> str:
    info = schema["info"]
    out = ["# HTTP API reference", "",
           "Generated from the OpenAPI document by `python scripts/gen_api_docs.py`; do not edit "
           "by hand (the tests fail when it is stale). The running server serves the same "
           "document at `/openapi.json`, Swagger UI at `/docs` and ReDoc at `/redoc`, all "
           "without internet access.", "", info.get("description", ""), ""]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, ops in schema["paths"].items():
        for method in METHOD_ORDER:
            if method in ops:
                tag = (ops[method].get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((method, path, ops[method]))
    tags = {t["name"]: t.get("description", "") for t in schema.get("tags", [])}
    for tag in [*tags, *sorted(set(by_tag) - set(tags))]:
        if tag not in by_tag:
            continue
        out += [f"## {tag.capitalize()}", "", tags.get(tag, ""), ""]
        for method, path, op in by_tag[tag]:
            out += _operation(schema, method, path, op)
    out += ["## JobSpec fields", "",
            "Every field of the body of `POST /v1/jobs` (and of a sweep's `base`), with its "
            "default, bounds and an example. `pairs` is `\"all\"` or `{\"sample\": K}` with "
            "1 <= K <= 1024.", "",
            "| field | type | default | bounds | example | description |",
            "|---|---|---|---|---|---|"]
    out += _fields(schema, {"$ref": "#/components/schemas/JobSpec"}, "")
    return "\n".join(line.rstrip() for line in out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is stale")
    args = parser.parse_args(argv)
    text = render(openapi())
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run python scripts/gen_api_docs.py",
                  file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
