"""Reading the files a command is given (specs, sweeps, rows to classify): a bad file is a
usage error (exit 2) before anything is sent."""
from __future__ import annotations

import csv
import json
from collections.abc import Collection
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CsvColumns:
    """What a CSV header is read against: names that are no feature (the label, the side
    column), and the training set's feature names in the model's order (None when unknown:
    the columns are then taken in file order)."""

    not_features: Collection[str]
    feature_names: list[str] | None = None


def read_inputs(path: Path, columns: CsvColumns | None = None) -> list[list[float]]:
    """Rows for predict from JSON (``[[...]]`` or ``{"inputs": [[...]]}``) or CSV (header
    row optional). A CSV header's columns in ``columns.not_features`` are left out, so a file
    shaped like the training data can be classified as is; with the feature names known, the
    header's columns are put in the model's order by name, and a name out of place is a
    usage error (a column in the wrong place would classify silently wrong)."""
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
    if raw and not _numeric(raw[0]):  # a header row
        keep = _feature_columns(path, [name.strip() for name in raw[0]],
                                columns or CsvColumns(()))
        raw = [[row[i] for i in keep if i < len(row)] for row in raw[1:]]
    rows = []
    for number, row in enumerate(raw, start=1):
        if not _numeric(row):
            fail(f"{path}: data row {number} is not all numbers", EXIT_USAGE)
        rows.append([float(v) for v in row])
    return _finite(path, rows)


def _feature_columns(path: Path, header: list[str], columns: CsvColumns) -> list[int]:
    """The header's positions to send, in the model's order."""
    names = columns.feature_names
    if names is None:
        return [i for i, name in enumerate(header) if name not in columns.not_features]
    at = {name: i for i, name in enumerate(header)}
    missing = [name for name in names if name not in at]
    known = set(names)
    unknown = [name for name in header if name not in known and name not in columns.not_features]
    if missing or unknown:
        problems = [f"{what} {found[:5]}{' ...' if len(found) > 5 else ''}"
                    for what, found in (("missing", missing), ("not a feature", unknown)) if found]
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        fail(f"{path}: the header's columns are not the training set's features "
             f"({'; '.join(problems)}); the model takes {len(names)} columns by name, in any "
             f"order: {shown}", EXIT_USAGE)
    return [at[name] for name in names]


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
