"""drtrain's tracking reads against MLflow's, on the same machine and the same run data.

    python -m bench.tracking_peers [--repeats 5] [--seconds 2] [--no-write]

MLflow (the ``[bench]`` extra) runs as its own tracking server (``mlflow server``, one
worker, a SQLite backend store, no access log); drtrain's API runs in embedded mode (SQLite)
as ``drtrain up`` starts it, once as configured and once with its job cache off (``DRTRAIN_JOB_CACHE_SECONDS=0``). Both
hold the same data: 50 finished runs (jobs), the first with 1,000 metric points (8 metrics of
125 steps each). Each read is driven by bench/loadgen.py from 16 keep-alive connections:

- one run: drtrain ``GET /v1/jobs/{id}`` against MLflow ``GET runs/get``;
- its metrics: drtrain's 1,000-point page ``GET /v1/jobs/{id}/metrics?limit=1000`` against
  MLflow's ``GET metrics/get-history`` (one metric key, 125 points, a request; the 8 keys in
  turn), per request and per full data set (8 MLflow requests);
- a 50-run list: drtrain ``GET /v1/jobs?page_size=50`` against MLflow ``POST runs/search``
  (``max_results`` 50).

Rounds are interleaved (every read on every server once per round); the table gives requests/s
min / median / max over the rounds and the ratio of the medians. MLflow keeps no read cache.
Prints a markdown section and writes it to docs/benchmarks.md (unless ``--no-write``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import loadgen
from bench.benchmarks_doc import write_section
from bench.service_stack import Stack, free_port

BEGIN, END = "<!-- tracking-peers:begin -->", "<!-- tracking-peers:end -->"
RUNS, METRIC_KEYS, STEPS = 50, 8, 125  # 8 x 125 = the 1,000 points of Stack.seed_jobs
CONCURRENCY = 16
MLFLOW, CACHED, UNCACHED = "MLflow", "drtrain", "drtrain, job cache off"
READS = ["one run", "metrics (per request)", "50-run list"]


class MLflowServer:
    """``mlflow server`` on a SQLite file under ``root``, and the REST calls that fill it."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/api/2.0/mlflow"
        mlflow = Path(sys.executable).with_name("mlflow")
        self.log = root / "mlflow.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                 "--default-artifact-root", (root / "artifacts").as_uri(), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1",
                 # no access log, as drtrain's API runs (uvicorn --log-level warning)
                 "--uvicorn-opts", "--no-access-log"],
                cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait()

    def _wait(self, seconds: float = 600) -> None:
        """Until it answers (its first start creates the tables: minutes on a busy machine)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"mlflow server not up in {seconds}s:\n{self.log.read_text()[-3000:]}")

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(f"{self.api}/{path}", json=body, timeout=60)
        r.raise_for_status()
        return r.json()

    def seed(self, spec: dict[str, Any], result_metrics: dict[str, float]) -> tuple[str, str]:
        """RUNS finished runs like Stack.seed_jobs' jobs: the spec as params, the final metrics;
        the first run with METRIC_KEYS x STEPS points. Returns (experiment id, first run id)."""
        exp = self.call("experiments/create", {"name": "bench"})["experiment_id"]
        params = [{"key": k, "value": str(v)[:6000]} for k, v in _flatten(spec).items()]
        now = int(time.time() * 1000)
        first = ""
        for i in range(RUNS):
            run_id = self.call("runs/create", {"experiment_id": exp, "start_time": now})["run"]["info"]["run_id"]
            first = first or run_id
            finals = [{"key": k, "value": v, "timestamp": now, "step": 0} for k, v in result_metrics.items()]
            self.call("runs/log-batch", {"run_id": run_id, "params": params, "metrics": finals})
            if i == 0:
                points = [{"key": f"metric_{j % METRIC_KEYS}", "value": 1.0 / j, "timestamp": now,
                           "step": j // METRIC_KEYS} for j in range(1, METRIC_KEYS * STEPS + 1)]
                self.call("runs/log-batch", {"run_id": run_id, "metrics": points})
            self.call("runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": now})
        return exp, first

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, list) else v
    return out


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    return loadgen.build_request("GET", url, headers)


def mlflow_requests(ml: MLflowServer, exp: str, run: str) -> dict[str, list[bytes]]:
    """read -> MLflow's requests for it, sent in turn."""
    search = json.dumps({"experiment_ids": [exp], "max_results": RUNS}).encode()
    return {
        "one run": [_get(f"{ml.api}/runs/get?run_id={run}")],
        "metrics (per request)": [_get(f"{ml.api}/metrics/get-history?run_id={run}&metric_key=metric_{k}")
                                  for k in range(METRIC_KEYS)],
        "50-run list": [loadgen.build_request("POST", f"{ml.api}/runs/search",
                                              {"Content-Type": "application/json"}, search)],
    }


def drtrain_requests(api: str, auth: dict[str, str], job: str) -> dict[str, list[bytes]]:
    """read -> drtrain's request for it."""
    return {
        "one run": [_get(f"{api}/v1/jobs/{job}", auth)],
        "metrics (per request)": [_get(f"{api}/v1/jobs/{job}/metrics?limit=1000", auth)],
        "50-run list": [_get(f"{api}/v1/jobs?page_size={RUNS}", auth)],
    }


def check_same_data(ml: MLflowServer, exp: str, run: str, api: str, auth: dict[str, str], job: str) -> None:
    """Each pair of reads returns the same amount of data before anything is timed."""
    history = httpx.get(f"{ml.api}/metrics/get-history", params={"run_id": run, "metric_key": "metric_0"}).json()
    assert len(history["metrics"]) == STEPS, history
    page = httpx.get(f"{api}/v1/jobs/{job}/metrics", params={"limit": 1000}, headers=auth).json()
    assert len(page["items"]) == METRIC_KEYS * STEPS, str(page)[:300]
    runs = ml.call("runs/search", {"experiment_ids": [exp], "max_results": RUNS})["runs"]
    jobs = httpx.get(f"{api}/v1/jobs", params={"page_size": RUNS}, headers=auth).json()
    assert len(runs) == RUNS and len(jobs["items"]) == RUNS, str(jobs)[:300]


def measure(targets: dict[str, tuple[str, dict[str, list[bytes]]]], repeats: int, seconds: float
            ) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], int]]:
    """(answered-200 req/s per (read, server) over ``repeats`` interleaved rounds, how many
    requests failed (not 200) in those rounds); ``targets``: server -> (URL, read -> requests)."""
    rates: dict[tuple[str, str], list[float]] = {(r, s): [] for r in READS for s in targets}
    failed = dict.fromkeys(rates, 0)
    for read in READS:
        for url, reqs in targets.values():  # warm-up: connections, caches, prepared statements
            _rate(url, reqs[read], 1.0)
    for i in range(repeats):
        for read in READS:
            order = list(targets) if i % 2 == 0 else list(reversed(targets))
            for server in order:
                url, reqs = targets[server]
                rate, bad = _rate(url, reqs[read], seconds)
                rates[(read, server)].append(rate)
                failed[(read, server)] += bad
                print(f"round {i + 1}/{repeats} {read} {server}: {rate:,.0f} req/s, {bad} failed",
                      flush=True)
    return rates, failed


def _rate(url: str, requests: list[bytes], seconds: float) -> tuple[float, int]:
    load = loadgen.run(url, requests, concurrency=CONCURRENCY, seconds=seconds)
    ok = load.statuses.get(200, 0)
    return ok / load.seconds, load.count - ok


def render(rates: dict[tuple[str, str], list[float]], failed: dict[tuple[str, str], int]) -> str:
    def cell(values: list[float], per: int = 1) -> str:
        v = sorted(x / per for x in values)
        return f"{v[0]:,.0f} / {statistics.median(v):,.0f} / {v[-1]:,.0f}"

    def ratio(read: str, server: str, per: int = 1) -> str:
        return f"{statistics.median(rates[(read, server)]) / statistics.median(rates[(read, MLFLOW)]) * per:,.1f}x"

    peer = {"one run": "`runs/get`", "metrics (per request)": "`metrics/get-history` (125 points)",
            "50-run list": "`runs/search` (50 runs)"}
    ours = {"one run": "`GET /v1/jobs/{id}`", "metrics (per request)": "`GET /v1/jobs/{id}/metrics` (1,000 points)",
            "50-run list": "`GET /v1/jobs` (50 jobs)"}
    lines = ["| read | MLflow call | MLflow req/s | drtrain call | drtrain req/s | drtrain req/s, job cache off "
             "| drtrain / MLflow | cache off / MLflow |", "|---|---|---|---|---|---|---|---|"]
    for read in READS:
        lines.append(f"| {read} | {peer[read]} | {cell(rates[(read, MLFLOW)])} | {ours[read]} | "
                     f"{cell(rates[(read, CACHED)])} | {cell(rates[(read, UNCACHED)])} | "
                     f"{ratio(read, CACHED)} | {ratio(read, UNCACHED)} |")
    read = "metrics (per request)"
    lines.append(f"| metrics (full 1,000-point data set) | 8 x `metrics/get-history` | "
                 f"{cell(rates[(read, MLFLOW)], METRIC_KEYS)} sets/s | 1 x the page | {cell(rates[(read, CACHED)])} sets/s | "
                 f"{cell(rates[(read, UNCACHED)])} sets/s | {ratio(read, CACHED, METRIC_KEYS)} | "
                 f"{ratio(read, UNCACHED, METRIC_KEYS)} |")
    bad = [f"{server}, {read}: {n}" for (read, server), n in failed.items() if n]
    lines += ["", "Requests answered other than 200 in the timed rounds (left out of the rates): "
              + ("; ".join(bad) if bad else "none") + "."]
    return "\n".join(lines)


def section(table: str, args: argparse.Namespace) -> str:
    from importlib.metadata import version
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"""{BEGIN}
## Tracking reads against MLflow (`bench/tracking_peers.py`)

Command: `python -m bench.tracking_peers --repeats {args.repeats} --seconds {args.seconds:g}`.
Date: {datetime.date.today().isoformat()}; MLflow {version('mlflow')} (`mlflow server`, one
worker, SQLite backend store, no access log) and drtrain's API in embedded mode (SQLite, one
uvicorn worker, no access log) on the same machine.
CPU: {cpu}, {os.cpu_count()} logical cores. Load average (1, 5, 15 min) at the end of the run: {load}.
The cores were shared with other work when the load average exceeds their number: absolute
figures are then far below a quiet machine's, and only the ratios, from interleaved rounds,
compare. MLflow comes with `pip install -e '.[bench]'`.

Same data in both: 50 finished runs (jobs), the first with 1,000 metric points (8 metrics x 125
steps). {CONCURRENCY} keep-alive connections per measurement, {args.seconds:g} s each, {args.repeats}
interleaved rounds; requests/s as min / median / max over the rounds, ratios of the medians. "job cache off" is a second drtrain API with `DRTRAIN_JOB_CACHE_SECONDS=0`: every
read queries the database, as when the tenant's jobs changed since the last read. MLflow keeps
no read cache. One MLflow `get-history` call returns one metric key; the full data set is 8 calls.

{table}
{END}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="drtrain-tracking-") as tmp:
        root = Path(tmp)
        stack = Stack("embedded", root / "drtrain")
        ml = None
        try:
            job = stack.seed_jobs(RUNS, points=METRIC_KEYS * STEPS)[0]
            cached = stack.start_api()
            uncached = stack.start_api("api-uncached", {"DRTRAIN_JOB_CACHE_SECONDS": "0"})
            (root / "mlflow").mkdir()
            ml = MLflowServer(root / "mlflow")
            job_body = httpx.get(f"{cached}/v1/jobs/{job}", headers=stack.auth).json()
            exp, run = ml.seed(job_body["spec"], job_body["result"]["metrics"])
            check_same_data(ml, exp, run, cached, stack.auth, job)
            measured = measure({MLFLOW: (ml.url, mlflow_requests(ml, exp, run)),
                             CACHED: (cached, drtrain_requests(cached, stack.auth, job)),
                             UNCACHED: (uncached, drtrain_requests(uncached, stack.auth, job))},
                            args.repeats, args.seconds)
        finally:
            if ml is not None:
                ml.close()
            stack.close()
    text_ = section(render(*measured), args)
    print(text_)
    if not args.no_write:
        write_section(text_, BEGIN, END)


if __name__ == "__main__":
    main()
