"""Peak memory of a real API process (and of the processes it starts to check uploads) while
a 50 MB CSV with text labels is uploaded and checked: at most twice the file plus a fixed
allowance. Measured from /proc (VmHWM, sampled every 10 ms) by bench/uploads.py's helpers,
on the API run as ``drtrain api`` runs it (uvicorn, embedded SQLite and object folder).
Parsing the whole file in the request made the API's peak grow with the file many times over;
the check now runs in a process of its own with a streaming reader.
"""
from __future__ import annotations

import time
from pathlib import Path

from bench.uploads import ROOT, _descendants, api_server, upload, write_csv

MIB = 2**20
# Fixed allowances: what a process holds whatever the file (interpreter, numpy, pyarrow,
# pyarrow's read-ahead blocks; docs/benchmarks.md, "Peak memory per upload").
API_ALLOWANCE = 64 * MIB
CHECK_ALLOWANCE = 160 * MIB


def test_a_50_mb_upload_takes_at_most_twice_its_size(tmp_path: Path):
    data = tmp_path / "50mb.csv"
    size = write_csv(data, 50, features=4)  # narrow rows: 1.6 million text labels
    assert size >= 50e6
    with api_server(ROOT, tmp_path) as server:
        deadline = time.monotonic() + 60
        while len(_descendants(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the forkserver (and its resource tracker) start in the background
        time.sleep(1)
        result = upload(server, data, sample=True)
    assert result.status == "ready"
    peaks = result.peaks
    assert peaks is not None and peaks.checker_peak > 0, "no check process was seen"
    growth = peaks.api_peak - peaks.api_idle
    assert growth <= 2 * size + API_ALLOWANCE, f"API grew {growth / MIB:.0f} MiB"
    assert peaks.checker_peak <= 2 * size + CHECK_ALLOWANCE, \
        f"check peaked at {peaks.checker_peak / MIB:.0f} MiB"
    print(f"API idle {peaks.api_idle / MIB:.0f} MiB, peak {peaks.api_peak / MIB:.0f} MiB; "
          f"check peak {peaks.checker_peak / MIB:.0f} MiB; tree {peaks.tree_peak / MIB:.0f} MiB")
