"""Uploads measured on a running API (embedded mode: SQLite, local object folder):

- time to accept a 200 MB CSV, to its 202 and to ``ready``, against a bare streaming upload
  (the same bytes POSTed to a route that only writes the body to a file) in the same run;
- /healthz latency (p50, p99, max) while that upload is sent and checked;
- peak memory of the API process, and of the processes it starts to check uploads, for a
  50 MB and a 150 MB CSV with string labels and few columns (many rows, so many labels),
  (VmHWM from /proc, sampled every 10 ms).

One command, which rewrites the "Uploads" section of docs/benchmarks.md:

    .venv/bin/python -m bench.uploads

and, for the "before" column, the same measurements of an older tree:

    mkdir -p /tmp/drtrain-before && git archive 0ca7a56 | tar -x -C /tmp/drtrain-before
    .venv/bin/python -m bench.uploads --before-tree /tmp/drtrain-before
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
from fastapi import FastAPI, Request

from bench.benchmarks_doc import write_section

# The tree whose API is measured (the "after" column); --before-tree names an older one.
ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- uploads:begin -->", "<!-- uploads:end -->"
MIB = 2**20
LABELS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
          "juliett"]


# ---------------------------------------------------------------- data
def write_csv(path: Path, megabytes: float, features: int = 64, seed: int = 0) -> int:
    """A CSV of ``features`` float columns (4 decimals) and a text ``label`` column (10
    classes), about ``megabytes`` MB; rows come from 16 distinct random blocks."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(16):
        values = rng.random((2000, features)).round(4)
        labels = rng.integers(0, len(LABELS), 2000)
        blocks.append("".join(",".join(map(str, row)) + f",class_{LABELS[c]}\n"
                              for row, c in zip(values.tolist(), labels.tolist())).encode())
    target = int(megabytes * 1e6)
    with open(path, "wb") as fh:
        fh.write((",".join(f"f{i}" for i in range(features)) + ",label\n").encode())
        written = 0
        while written < target:
            block = blocks[(written // len(blocks[0])) % len(blocks)]
            fh.write(block)
            written += len(block)
    return path.stat().st_size


# ---------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status(pid: int, field_name: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) * 1024 if found else 0


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


@dataclass
class Peaks:
    api_idle: int = 0  # RSS of the API process before the upload
    api_peak: int = 0  # its VmHWM after it (its whole life's peak)
    checker_peak: int = 0  # the largest VmHWM seen in any process the API started
    tree_peak: int = 0  # the largest sum of RSS over the API and its processes


class Sampler:
    """Peak memory of a process and of every process below it, sampled every 10 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks = Peaks(api_idle=_status(pid, "VmRSS"))
        self.baseline: dict[int, int] = {}  # long-lived helpers (the forkserver) at start
        for child in _descendants(pid):
            self.baseline[child] = _status(child, "VmHWM")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = _status(self.pid, "VmRSS")
            for child in _descendants(self.pid):
                total += _status(child, "VmRSS")
                if child not in self.baseline:
                    self.peaks.checker_peak = max(self.peaks.checker_peak,
                                                  _status(child, "VmHWM"))
            self.peaks.tree_peak = max(self.peaks.tree_peak, total)
            time.sleep(0.01)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peaks.api_peak = _status(self.pid, "VmHWM")


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    key: str = ""
    log: Path = field(default_factory=Path)


def _python() -> str:
    return sys.executable


def _env(data_dir: Path, tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRTRAIN_")}
    env.update(DRTRAIN_DATA_DIR=str(data_dir), DRTRAIN_ENVIRONMENT="embedded",
               DRTRAIN_MAX_UPLOAD_BYTES=str(1 << 30), PYTHONPATH=str(tree))
    return env


@contextmanager
def api_server(tree: Path, workdir: Path) -> Iterator[Server]:
    """The tree's API (``uvicorn api.app:main_app``), migrated, with a key, on a free port."""
    data_dir = workdir / "data"
    env = _env(data_dir, tree)
    cli = [_python(), "-m", "drtrain_cli.main"]
    subprocess.run([*cli, "migrate"], cwd=tree, env=env, check=True, capture_output=True)
    made = subprocess.run([*cli, "keys", "create", "--tenant", "bench"], cwd=tree, env=env,
                          check=True, capture_output=True, text=True).stdout
    port = free_port()
    log = workdir / "api.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([_python(), "-m", "uvicorn", "api.app:main_app", "--factory",
                                 "--host", "127.0.0.1", "--port", str(port), "--log-level",
                                 "warning"], cwd=tree, env=env, stdout=out, stderr=out)
    server = Server(f"http://127.0.0.1:{port}", proc, made.strip().split()[-1], log)
    try:
        _wait_up(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bare_app() -> FastAPI:
    """The baseline: a route that streams the request body to a file, and nothing else."""
    app = FastAPI()

    @app.post("/bare")
    async def bare(request: Request) -> dict[str, int]:
        size = 0
        with tempfile.TemporaryFile() as fh:
            async for chunk in request.stream():
                fh.write(chunk)
                size += len(chunk)
        return {"size": size}

    return app


@contextmanager
def bare_server(workdir: Path) -> Iterator[Server]:
    port = free_port()
    log = workdir / "bare.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([_python(), "-m", "uvicorn", "bench.uploads:bare_app",
                                 "--factory", "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "warning"], cwd=ROOT,
                                env=_env(workdir, ROOT), stdout=out, stderr=out)
    server = Server(f"http://127.0.0.1:{port}", proc, "", log)
    try:
        _wait_up(server, "/docs")
        yield server
    finally:
        proc.terminate()
        proc.wait(20)


def _wait_up(server: Server, path: str = "/healthz", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited: {server.log.read_text()[-2000:]}")
        try:
            if httpx.get(server.url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not up after {timeout} s")


# ---------------------------------------------------------------- measurements
@dataclass
class UploadResult:
    size: int
    accepted_s: float  # until the response to the POST (202, or 201 from an old tree)
    ready_s: float  # until GET says ready
    status: str
    peaks: Peaks | None = None


def upload(server: Server, path: Path, *, sample: bool = False) -> UploadResult:
    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=600) as client:
        sampler = Sampler(server.process.pid) if sample else None
        with sampler or _nothing():
            started = time.perf_counter()
            with open(path, "rb") as fh:
                resp = client.post("/v1/datasets", files={"file": (path.name, fh, "text/csv")})
            accepted = time.perf_counter() - started
            if resp.status_code not in (201, 202):
                raise RuntimeError(f"upload answered {resp.status_code}: {resp.text[:500]}")
            body = resp.json()
            while body.get("status", "ready") == "validating":
                time.sleep(0.05)
                body = client.get(f"/v1/datasets/{body['id']}").json()
            ready = time.perf_counter() - started
        return UploadResult(path.stat().st_size, accepted, ready, body.get("status", "ready"),
                            sampler.peaks if sampler else None)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def bare_upload(server: Server, path: Path) -> float:
    with httpx.Client(base_url=server.url, timeout=600) as client, open(path, "rb") as fh:
        started = time.perf_counter()
        resp = client.post("/bare", files={"file": (path.name, fh, "text/csv")})
        resp.raise_for_status()
        return time.perf_counter() - started


class HealthProbe:
    """GET /healthz every 20 ms on its own connection; latencies in ms."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get("/healthz")
                self.latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(0.02)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        values = sorted(self.latencies)
        p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
        return {"n": len(values), "p50_ms": statistics.median(values), "p99_ms": p99,
                "max_ms": values[-1]}


def measure_memory(tree: Path, work: Path, files: dict[int, Path]) -> dict[int, UploadResult]:
    """Each size on a fresh API, so each peak is that upload's own."""
    results = {}
    for mb, path in files.items():
        run = work / f"mem-{mb}-{tree.name}"
        run.mkdir()
        with api_server(tree, run) as server:
            time.sleep(2)  # start-up work (forkserver, built-ins) done before the idle reading
            results[mb] = upload(server, path, sample=True)
    return results


def measure_speed(work: Path, path: Path, runs: int) -> dict[str, object]:
    """Bare upload and real upload of the same file, alternating, median of ``runs``."""
    run = work / "speed"
    run.mkdir()
    bare, accepted, ready = [], [], []
    health: list[dict[str, float]] = []
    with api_server(ROOT, run) as server, bare_server(run) as bare_srv:
        time.sleep(2)
        for _ in range(runs):
            bare.append(bare_upload(bare_srv, path))
            with HealthProbe(server.url) as probe:
                result = upload(server, path)
            accepted.append(result.accepted_s)
            ready.append(result.ready_s)
            health.append(probe.summary())
    b, a, r = statistics.median(bare), statistics.median(accepted), statistics.median(ready)
    return {"size": path.stat().st_size, "runs": runs, "bare_s": bare, "accepted_s": accepted,
            "ready_s": ready, "bare_median_s": b, "accepted_median_s": a, "ready_median_s": r,
            "ratio_accepted": a / b, "ratio_ready": r / b, "healthz": health,
            "healthz_p99_ms_worst": max(h["p99_ms"] for h in health)}


# ---------------------------------------------------------------- report
def _mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB"


def report(speed: dict, after: dict[int, UploadResult],
           before: dict[int, UploadResult] | None, before_tree: str | None,
           memory_features: int) -> str:
    lines = [BEGIN, "## Uploads (`bench/uploads.py`)", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} "
             f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end), "
             "embedded mode (SQLite, local object folder), CSVs of float columns (4 decimals) "
             "and a text label (10 classes). Command: `.venv/bin/python -m bench.uploads"
             + (" --before-tree DIR`" if before else "`") + ".", "",
             f"### {speed['size'] / 1e6:.0f} MB CSV: accepted vs a bare streaming upload, "
             "/healthz meanwhile", "",
             f"64 float columns. Median of {speed['runs']} runs, alternating with the bare "
             "upload (a route that only writes the request body to a file, same uvicorn "
             "settings). The check starts once the headers passed, while the file is stored.",
             "",
             "| | seconds | x bare |", "|---|---|---|",
             f"| bare streaming upload | {speed['bare_median_s']:.2f} | 1.0 |",
             f"| upload answered (202) | {speed['accepted_median_s']:.2f} | "
             f"{speed['ratio_accepted']:.1f} |",
             f"| dataset `ready` (checked) | {speed['ready_median_s']:.2f} | "
             f"{speed['ratio_ready']:.1f} |", "",
             "| run | /healthz n | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
    for i, h in enumerate(speed["healthz"], 1):
        lines.append(f"| {i} | {h['n']} | {h['p50_ms']:.1f} | {h['p99_ms']:.1f} | "
                     f"{h['max_ms']:.1f} |")
    lines += ["", f"### Peak memory per upload ({memory_features} float columns and a text "
                  "label: many rows, many labels)", "",
              "API: the API process's peak RSS (VmHWM) and its RSS before the upload. Check: the "
              "largest peak RSS of a process the API started for the upload (the check runs in "
              "a child since the 202 change; it includes ~70 MiB of numpy and pyarrow shared "
              "with the forkserver it is forked from). Tree: the largest sum of RSS over the API "
              "and all its processes at one time.", "",
              "| file | code | answered s | ready s | API idle | API peak | API peak - idle | "
              "check peak | tree peak |",
              "|---|---|---|---|---|---|---|---|---|"]
    for label, results in (("before", before), ("after", after)):
        for r in (results or {}).values():
            p = r.peaks or Peaks()
            lines.append(f"| {r.size / 1e6:.0f} MB | {label} | {r.accepted_s:.2f} | "
                         f"{r.ready_s:.2f} | {_mib(p.api_idle)} | "
                         f"{_mib(p.api_peak)} | {_mib(p.api_peak - p.api_idle)} | "
                         f"{_mib(p.checker_peak) if p.checker_peak else '-'} | "
                         f"{_mib(p.tree_peak)} |")
    if before_tree:
        lines += ["", f"\"before\" is the tree at `{before_tree}` (commit 0ca7a56: the whole "
                      "file parsed in the request with the csv module, answered 201 when done), "
                      "measured by the same script in the same run."]
    lines.append(END)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-tree", type=Path, help="an older source tree to measure too")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--speed-mb", type=float, default=200)
    parser.add_argument("--memory-mb", type=int, nargs="*", default=[50, 150])
    parser.add_argument("--memory-features", type=int, default=4)
    parser.add_argument("--no-write", action="store_true", help="print, leave the docs alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="drtrain-bench-uploads-") as tmp:
        work = Path(tmp)
        files = {mb: work / f"{mb}mb.csv" for mb in args.memory_mb}
        for mb, path in files.items():
            write_csv(path, mb, features=args.memory_features)
        big = work / "speed.csv"
        write_csv(big, args.speed_mb, seed=1)
        speed = measure_speed(work, big, args.runs)
        after = measure_memory(ROOT, work, files)
        before = measure_memory(args.before_tree.resolve(), work, files) \
            if args.before_tree else None
    print(json.dumps({"speed": speed, "after": {k: asdict(v) for k, v in after.items()},
                      "before": {k: asdict(v) for k, v in (before or {}).items()}}, indent=1))
    section = report(speed, after, before, str(args.before_tree) if args.before_tree else None,
                     args.memory_features)
    if not args.no_write:
        write_section(section, BEGIN, END)
    print(section)


if __name__ == "__main__":
    main()
