"""The dataset readers (``drtrain.datasets.formats``): pyarrow's streaming CSV reader reads
what the csv module reads, the first problem is named by row and column wherever it is, and
NPZ/IDX arrays streamed in blocks come out as numpy would load them."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from drtrain.datasets import csvfile
from drtrain.datasets.formats import inspect_upload, read_any
from drtrain.kit.errors import Invalid
from drtrain.kit.settings import Settings

LIMITS = Settings(environment="test")


def _read(path: Path, fmt: str = "csv", **kw: object):  # noqa: ANN202
    args = {"labels_path": None, "label_column": "label", "side_info_column": None,
            "limits": LIMITS, **kw}
    return read_any(path, fmt, **args), inspect_upload(path, fmt, **args)


def test_csv_quirks_read_as_the_csv_module_reads_them(tmp_path: Path):
    path = tmp_path / "q.csv"
    path.write_bytes(
        "\ufeffa, b ,label,group\r\n"
        "1, 2e0 ,\" cat \",g1\r\n"
        "\r\n"
        "\"3\",4.5,\"dog, the \"\"good\"\"\",g2\r\n"
        "-5,.25,\"multi\nline\",g1\r\n".encode())
    data, summary = _read(path, side_info_column="group")
    np.testing.assert_array_equal(data.X, np.array([[1, 2], [3, 4.5], [-5, 0.25]], np.float32))
    assert data.classes == ["cat", 'dog, the "good"', "multi\nline"]
    assert data.y.tolist() == [0, 1, 2] and data.groups.tolist() == [0, 1, 0]
    assert summary.feature_range == [-5.0, 4.5] and summary.n_samples == 3
    assert summary.class_counts == {"cat": 1, 'dog, the "good"': 1, "multi\nline": 1}


def test_numeric_labels_are_ordered_as_numbers(tmp_path: Path):
    path = tmp_path / "n.csv"
    path.write_text("a,label\n1,10\n2,9\n3,2\n4,10\n")
    data, summary = _read(path)
    assert data.classes == ["2", "9", "10"] and data.y.tolist() == [2, 1, 0, 2]
    assert list(summary.class_counts) == ["2", "9", "10"]


def _big_csv(path: Path, rows: int, last: str | None = None) -> np.ndarray:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(rows, 8)).astype(np.float32)
    with open(path, "w") as fh:
        fh.write(",".join(f"f{i}" for i in range(8)) + ",label\n")
        for i, row in enumerate(X):
            fh.write(",".join(repr(float(v)) for v in row) + f",c{i % 3}\n")
        if last is not None:
            fh.write(last)
    return X


def test_rows_over_many_blocks_arrive_whole_and_in_order(tmp_path: Path):
    path = tmp_path / "big.csv"
    X = _big_csv(path, 60_000)
    assert path.stat().st_size > 4 * csvfile.BLOCK_BYTES
    data, summary = _read(path)
    np.testing.assert_array_equal(data.X, X)
    assert data.y.tolist() == [i % 3 for i in range(60_000)]
    assert summary.n_samples == 60_000
    assert summary.feature_range == [float(X.min()), float(X.max())]


@pytest.mark.parametrize(("last", "message"), [
    ("1,2,3,4,5,6,7,nan,c0\n", "row 60001, column 'f7': 'nan' is not finite"),
    ("1,2,3,4,5,6,7,8\n", "row 60001: 8 fields, the header has 9"),
    ("1,2,3,4,5,6,7,x8,c0\n", "row 60001, column 'f7': 'x8' is not a number"),
    ("1,2,3,4,5,6,7,8," + "z" * 201 + "\n", "row 60001, column 'label': the label is longer"),
])
def test_a_problem_in_the_last_block_is_named_by_its_row(tmp_path: Path, last: str,
                                                         message: str):
    path = tmp_path / "bad.csv"
    _big_csv(path, 60_000, last)
    with pytest.raises(Invalid) as info:
        inspect_upload(path, "csv", labels_path=None, label_column="label",
                       side_info_column=None, limits=LIMITS)
    assert info.value.detail.startswith(message), info.value.detail


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize("fortran", [False, True])
def test_npz_blocks_load_as_numpy_loads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             fortran: bool):
    from drtrain.datasets import arrays

    monkeypatch.setattr(arrays, "BLOCK_BYTES", 4096)  # many blocks, partial last one
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 3, 7))
    X = np.asfortranarray(X) if fortran else X
    y = np.array(["b", "a", "c"])[np.arange(300) % 3]
    groups = (np.arange(300) % 11).astype(np.int16)
    path = _npz(tmp_path / "a.npz", X=X, y=y, groups=groups)
    data, summary = _read(path, "npz")
    np.testing.assert_array_equal(data.X, X.reshape(300, 21).astype(np.float32))
    assert data.classes == ["a", "b", "c"] and [data.classes[i] for i in data.y] == y.tolist()
    assert data.groups.tolist() == groups.tolist()
    assert summary.feature_range == [float(X.astype(np.float32).min()),
                                     float(X.astype(np.float32).max())]

    X_bad = X.copy()
    X_bad[123, 2, 4] = np.inf
    bad = _npz(tmp_path / "b.npz", X=np.asfortranarray(X_bad) if fortran else X_bad, y=y)
    with pytest.raises(Invalid, match=r"row 123, feature 18 is not finite"):
        _read(bad, "npz")
