"""Render docs/configuration.md from the settings object (drtrain/kit/settings.py), the one
place drtrain reads the environment.

    python scripts/gen_config_docs.py          # rewrite docs/configuration.md
    python scripts/gen_config_docs.py --check  # exit 1 when docs/configuration.md is stale

tests/test_configuration_docs.py runs the check, so a setting added, removed or changed
without regenerating fails the tests.
"""
from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "configuration.md"
REGENERATE = "python scripts/gen_config_docs.py"
TYPE_NAMES = {"int": "integer", "float": "number", "str": "text", "bool": "boolean",
              "Path": "path", "SecretStr": "secret text"}
BOUND_SIGNS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("pattern", "matches"))

INTRO = [
    "# Configuration",
    "",
    f"Generated from `drtrain/kit/settings.py` by `{REGENERATE}`; do not edit by hand (the "
    "tests fail when it is stale). To add a setting, add a field with a description to "
    "`Settings` and regenerate.",
    "",
    "Every setting is an environment variable: the field's name in capitals after the prefix "
    "`DRTRAIN_` (case does not matter). One settings object reads them; nothing else in "
    "drtrain reads the environment. Empty or unset means the embedded default: SQLite, a "
    "local object folder and a filesystem broker, all under `DRTRAIN_DATA_DIR`. With "
    "`DRTRAIN_ENVIRONMENT=production` the service refuses to start without explicit database, "
    "broker and storage URLs, or with half an S3 credential pair. A value of the wrong type or "
    "out of bounds stops the process that reads the settings, with an error naming the field.",
    "",
    "How to run the service in production: [guide.md](guide.md#production).",
    "",
]


def settings_class() -> type:
    from drtrain.kit.settings import Settings  # the installed package (pip install -e .)

    return Settings


def _type(annotation: Any) -> str:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        names = [_type(a) for a in typing.get_args(annotation) if a is not type(None)]
        optional = type(None) in typing.get_args(annotation)
        return " or ".join(names) + (", or unset" if optional else "")
    name = getattr(annotation, "__name__", str(annotation))
    return TYPE_NAMES.get(name, name)


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if value == "" and isinstance(value, str):
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and value >= 2**20:
        for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
            if value % size == 0:
                return f"`{value}` ({value // size} {unit})"
    return f"`{value}`"


def _bounds(metadata: list[Any]) -> str:
    parts = []
    for item in metadata:
        for attr, sign in BOUND_SIGNS:
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} `{value}`" if attr == "pattern" else f"{sign} {value}")
    return ", ".join(parts)


def render(settings: type) -> str:
    prefix = settings.model_config.get("env_prefix", "")
    fields = settings.model_fields
    undescribed = [name for name, field in fields.items() if not field.description]
    if undescribed:
        raise ValueError("settings without a description: " + ", ".join(undescribed))
    out = [*INTRO, "| variable | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for name, field in fields.items():
        cells = [f"`{(prefix + name).upper()}`", _type(field.annotation), _default(field.default),
                 _bounds(field.metadata), str(field.description)]
        # A bare | would end the cell early, even inside backticks.
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(line.rstrip() for line in out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/configuration.md is stale")
    args = parser.parse_args(argv)
    text = render(settings_class())
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
