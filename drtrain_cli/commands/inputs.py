"""Reading the files a command is given (specs, sweeps, rows to classify): a bad file is a
usage error (exit 2) before anything is sent."""
from __future__ import annotations

import csv
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from drtrain_cli.commands.output import EXIT_USAGE, fail
from drtrain_client.client import first_non_finite


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)
    except json.JSONDecodeError as exc:
        fail(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
             EXIT_USAGE)


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    value = read_json_file(path)
    if not isinstance(value, dict):
        fail(f"{path}: {what} is a JSON object", EXIT_USAGE)
    return value


def read_inputs(path: Path, not_features: Collection[str] = ()) -> list[list[float]]:
    """Rows for predict from JSON (``[[...]]`` or ``{"inputs": [[...]]}``) or CSV (header
    row optional). A CSV header's columns named in ``not_features`` (the label, the side
    column) are left out, so a file shaped like the training data can be classified as is."""
    if path.suffix.lower() == ".json":
        data = read_json_file(path)
        rows = data.get("inputs") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            fail(f"{path}: expected a list of rows or {{\"inputs\": [[...], ...]}}", EXIT_USAGE)
        return _finite(path, rows)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            raw = [row for row in csv.reader(fh) if row]
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)
    keep: list[int] | None = None
    if raw and not _numeric(raw[0]):  # a header row
        keep = [i for i, name in enumerate(raw[0]) if name.strip() not in not_features]
        raw = [[row[i] for i in keep if i < len(row)] for row in raw[1:]]
    rows = []
    for number, row in enumerate(raw, start=1):
        if not _numeric(row):
            fail(f"{path}: data row {number} is not all numbers", EXIT_USAGE)
        rows.append([float(v) for v in row])
    return _finite(path, rows)


def _finite(path: Path, rows: list[list[Any]]) -> list[list[Any]]:
    """The rows, once none holds NaN or an infinity (Python's JSON and CSV readers take
    them; JSON cannot send them, and a model cannot use them)."""
    where = first_non_finite(rows)
    if where is not None:
        row, column, value = where
        fail(f"{path}: data row {row + 1}, column {column + 1}: {value} is not a finite number",
             EXIT_USAGE)
    return rows


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True
