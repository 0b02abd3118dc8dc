"""The service under load, against its throughput and latency targets: each figure a ratio
against a bare FastAPI route served by the same uvicorn command in the same run, or an
absolute latency, in embedded mode (SQLite, filesystem broker) and in production mode
(PostgreSQL + Redis).

One command; it rewrites the "Service" section of docs/benchmarks.md:

    .venv/bin/python -m bench.service [--modes embedded production] [--repeats 3] [--no-write]

Measured, per mode (medians of ``--repeats`` runs; load from bench/loadgen.py in a separate
process, so the clients do not share the API's interpreter):

- status GET, a 50-job list and a 1,000-point metrics page: requests/s at 16 connections,
  against the bare GET route;
- 256 concurrent keep-alive clients on the status GET: errors and p99;
- submit latency (p50, p99) at 1, 16 and 64 concurrent submitters, every answer a 202;
  exactly-once under 64 concurrent submitters retrying with Idempotency-Keys (one job per
  key); the per-tenant limit under 64 submitters at once (as many 202s as the limit the API
  enforces one at a time, every other answer a 429, as many jobs listed);
- queue latency: a job's ``started_at - created_at`` for tiny jobs submitted one at a time
  with a worker waiting;
- 500 event-stream clients on one running job: status GET p99 meanwhile, API RSS growth,
  and the job's training time against the same job with nobody watching.

The 200 MB CSV upload targets are measured by bench/uploads.py (its own section).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import loadgen
from bench.benchmarks_doc import write_section
from bench.service_stack import ROOT, Stack, cpu_seconds, rss_bytes

BEGIN, END = "<!-- service:begin -->", "<!-- service:end -->"
SUBMITS_BEGIN, SUBMITS_END = "<!-- service-submits:begin -->", "<!-- service-submits:end -->"

TINY_JOB = {"dataset_id": "builtin:digits", "validation_fraction": 0.2,
            "model": {"hidden_layers": [16]}, "pretrain": None,
            "finetune": {"epochs": 1, "batch_size": 256, "dr": None}, "seed": 0, "device": "cpu"}
# About 10 s of training on a shared CPU, with metric points every epoch (several a second),
# so 500 watchers have something to be sent.
WATCHED_JOB = {"dataset_id": "builtin:digits", "validation_fraction": 0.2,
               "model": {"hidden_layers": [256, 128]},
               "pretrain": {"epochs": 12, "batch_size": 16, "learning_rate": 0.05,
                            "dr": {"weight": 0.5, "divergence": "hellinger",
                                   "pairs": {"sample": 4}}},
               "finetune": {"epochs": 20, "batch_size": 32, "learning_rate": 0.1,
                            "dr": {"weight": 0.05, "distance": "euclidean", "layers": "all"}},
               "seed": 1, "device": "cpu"}

Row = dict[str, Any]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def get(url: str, headers: dict[str, str]) -> bytes:
    return loadgen.build_request("GET", url, headers)


def post_json(url: str, headers: dict[str, str], body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return loadgen.build_request("POST", url, {**headers, "Content-Type": "application/json"}, data)


def rate(url: str, request: bytes, concurrency: int, seconds: float) -> loadgen.Load:
    load = loadgen.run(url, [request], concurrency=concurrency, seconds=seconds)
    if load.errors:
        raise RuntimeError(f"{load.errors} errors: {load.statuses}")
    return load


# ---------------------------------------------------------------- measurements
def reads(stack: Stack, api: str, bare: str, repeats: int, seconds: float) -> list[Row]:
    ids = stack.seed_jobs(50, points=1000)
    job = ids[0]
    auth = stack.auth
    targets = {
        "status GET": (get(f"{api}/v1/jobs/{job}", auth), 0.5),
        "50-job list": (get(f"{api}/v1/jobs?page_size=50", auth), 0.25),
        "1,000-point metrics page": (get(f"{api}/v1/jobs/{job}/metrics?limit=1000", auth), 0.15),
    }
    bare_request = get(f"{bare}/bare", {})
    rows = []
    for name, (request, target) in targets.items():
        ratios, rates, bares = [], [], []
        rate(api, request, 4, 1.0)  # warm: key cache, prepared statements
        for _ in range(repeats):
            base = rate(bare, bare_request, 16, seconds).rate
            ours = rate(api, request, 16, seconds).rate
            bares.append(base)
            rates.append(ours)
            ratios.append(ours / base)
        rows.append({"what": name, "value": f"{median(rates):,.0f} req/s vs bare "
                     f"{median(bares):,.0f}", "ratio": median(ratios), "target": target})
    return rows + uncached_reads(stack, bare_request, repeats, seconds)


def uncached_reads(stack: Stack, bare_request: bytes, repeats: int, seconds: float) -> list[Row]:
    """The job and list reads with the job cache off (``DRTRAIN_JOB_CACHE_SECONDS=0``): what
    each read costs when the tenant's jobs changed since the last one. No target: shown so
    the cached figures above are not mistaken for the cost of a query."""
    api = stack.start_api("api-uncached", {"DRTRAIN_JOB_CACHE_SECONDS": "0"})
    bare = stack.urls["bare"]
    job = stack.seed_jobs(1)[0]
    rows = []
    try:
        for name, path in (("status GET", f"/v1/jobs/{job}"), ("50-job list", "/v1/jobs")):
            request = get(f"{api}{path}", stack.auth)
            rate(api, request, 4, 1.0)
            ratios, rates = [], []
            for _ in range(repeats):
                base = rate(bare, bare_request, 16, seconds).rate
                ours = rate(api, request, 16, seconds).rate
                rates.append(ours)
                ratios.append(ours / base)
            rows.append({"what": f"{name}, job cache off", "value": f"{median(rates):,.0f} req/s, "
                         f"{median(ratios):.2f}x the bare route", "ratio": None, "target": None})
    finally:
        stack.stop("api-uncached")
    return rows


def crowd(stack: Stack, api: str, repeats: int) -> Row:
    job = stack.seed_jobs(1)[0]
    request = get(f"{api}/v1/jobs/{job}", stack.auth)
    p99s, errors, served = [], 0, 0
    for _ in range(repeats):
        load = loadgen.run(api, [request], concurrency=256, per_client=8, seconds=120)
        p99s.append(load.quantile(0.99))
        errors += load.errors + sum(n for s, n in load.statuses.items() if s != 200)
        served += load.statuses.get(200, 0)
    return {"what": "256 concurrent clients on a status GET",
            "value": f"{served:,} served, {errors} errors, p99 {median(p99s) * 1000:.0f} ms",
            "ratio": None, "target": "all served, 0 errors, p99 < 1000 ms",
            "met": errors == 0 and median(p99s) < 1.0}


# Concurrent submitters measured, and each one's p99 target: a person or a script submitting
# gets an answer well within a second even while 63 others submit at the same moment.
SUBMITTERS = {1: 30.0, 16: 100.0, 64: 250.0}
# The per-tenant limit of the API that the cap is checked on (its other settings as the
# stack's); the limit it enforces is found by submitting one at a time (``cap_under_load``).
CAPPED_ENV = {"DRTRAIN_MAX_CONCURRENT_JOBS_PER_TENANT": "8",
              "DRTRAIN_MAX_QUEUED_JOBS_PER_TENANT": "16"}
# A tenant with a backlog: one script submits this many tiny jobs, one after another, to an API
# with this running cap, and waits for them all.
BACKLOG_JOBS = 30
BACKLOG_ENV = {"DRTRAIN_MAX_CONCURRENT_JOBS_PER_TENANT": "8"}


# The rows of ``submits``, ``exactly_once``, ``cap_under_load`` and ``backlog``: their own
# section.
SUBMIT_ROWS = ("submit, ", "exactly-once", "the per-tenant limit", "a backlog of")


def submits(stack: Stack, api: str, repeats: int, seconds: float) -> list[Row]:
    """Submit latency at each of SUBMITTERS concurrent submitters (interleaved repeats, each
    ``seconds`` long, its jobs cancelled after it): every answer must be a 202."""
    request = post_json(f"{api}/v1/jobs", stack.auth, TINY_JOB)
    rate(api, request, 2, 1.0)  # warm: key cache, prepared statements
    stack.forget_queued()
    loads: dict[int, list[loadgen.Load]] = {n: [] for n in SUBMITTERS}
    for _ in range(repeats):
        for n in SUBMITTERS:
            loads[n].append(loadgen.run(api, [request], concurrency=n, seconds=seconds))
            stack.forget_queued()
    rows = []
    for n, target in SUBMITTERS.items():
        answers: Counter[int | str] = Counter()
        for load in loads[n]:
            answers.update(load.statuses)
        p50 = [load.quantile(0.5) * 1000 for load in loads[n]]
        p99 = [load.quantile(0.99) * 1000 for load in loads[n]]
        rates = [load.rate for load in loads[n]]
        rows.append({
            "what": f"submit, {n} concurrent submitter{'s' if n > 1 else ''}",
            "value": f"p50 {median(p50):.1f} ms, p99 {median(p99):.1f} ms "
                     f"(p99 {min(p99):.1f}–{max(p99):.1f}); {median(rates):,.0f} submits/s; "
                     f"answers {_answers(answers)}",
            "ratio": None, "target": f"p99 < {target:g} ms, every answer 202",
            "met": median(p99) < target and set(answers) == {202}})
    return rows


def _answers(statuses: Counter[int | str]) -> str:
    return ", ".join(f"{n:,} x {status}" for status, n in sorted(statuses.items(), key=str))


def _tenant_auth(stack: Stack, name: str) -> dict[str, str]:
    """The Authorization header of a new key of a new tenant (its own jobs, its own limit)."""
    from drtrain.kit.db import session_scope
    from drtrain.tenants.keys import create_key

    with session_scope(stack.factory) as s:
        return {"Authorization": f"Bearer {create_key(s, name)}"}


def _listed(api: str, auth: dict[str, str]) -> int:
    """How many jobs the API lists for the key's tenant (every page)."""
    count, token = 0, None
    with httpx.Client(headers=auth, timeout=30) as client:
        while True:
            params = {"page_size": 200, **({"page_token": token} if token else {})}
            page = client.get(f"{api}/v1/jobs", params=params).json()
            count += len(page["items"])
            token = page["next_page_token"]
            if not token:
                return count


def exactly_once(stack: Stack, api: str, clients: int = 64, per_client: int = 32,
                 per_key: int = 4) -> Row:
    """``clients`` submitters at once, retrying with Idempotency-Keys: request ``j`` carries
    key ``j // per_key`` and submitter ``i`` sends requests i, i+1, ..., so each key is sent
    by many submitters at the same moment. Each key must make one job: one 202, 200s for the
    replays, and the tenant lists as many jobs as there were keys."""
    auth = _tenant_auth(stack, "bench-idempotency")
    count = clients + per_client - 1
    requests = [post_json(f"{api}/v1/jobs", {**auth, "Idempotency-Key": f"bench-{j // per_key}"},
                          TINY_JOB) for j in range(count)]
    keys = len({j // per_key for j in range(count)})
    load = loadgen.run(api, requests, concurrency=clients, per_client=per_client, seconds=300)
    listed = _listed(api, auth)
    ok = load.statuses[202] == keys == listed and set(load.statuses) <= {200, 202}
    return {"what": f"exactly-once: {clients} submitters retrying {keys} Idempotency-Keys",
            "value": f"{load.count:,} submits: {_answers(load.statuses)}; {listed} jobs listed",
            "ratio": None, "target": f"one job per key: {keys} x 202, {keys} listed, the rest 200",
            "met": ok}


def cap_under_load(stack: Stack, clients: int = 64, per_client: int = 4) -> Row:
    """The per-tenant limit under ``clients`` concurrent submitters, checked against the API's
    own answers whatever the limit counts (active jobs, or running plus queued): on an API
    started with CAPPED_ENV, one tenant submits one job at a time until the first 429 (the
    limit it enforces); a second tenant then submits ``clients * per_client`` jobs at once.
    It must get exactly as many 202s, every other answer a 429, and list as many jobs."""
    api = stack.start_api("api-capped", CAPPED_ENV)
    try:
        probe = _tenant_auth(stack, "bench-cap-probe")
        limit = 0
        with httpx.Client(headers=probe, timeout=30) as client:
            while client.post(f"{api}/v1/jobs", json=TINY_JOB).status_code == 202:
                limit += 1
                if limit > 100_000:
                    raise RuntimeError("no limit reached after 100,000 submits")
        auth = _tenant_auth(stack, "bench-cap")
        load = loadgen.run(api, [post_json(f"{api}/v1/jobs", auth, TINY_JOB)],
                           concurrency=clients, per_client=per_client, seconds=300)
        listed = _listed(api, auth)
    finally:
        stack.stop("api-capped")
    ok = (load.statuses[202] == limit == listed and set(load.statuses) <= {202, 429})
    return {"what": f"the per-tenant limit, {clients} submitters at once",
            "value": f"limit {limit} (one at a time); at once: {load.count:,} submits: "
                     f"{_answers(load.statuses)}; {listed} jobs listed",
            "ratio": None, "target": f"{limit} x 202, the rest 429, {limit} listed", "met": ok}


class _CountingTransport(httpx.HTTPTransport):
    """Counts the answers to POSTs by status: the 429s a client's own retries hide."""

    def __init__(self) -> None:
        super().__init__()
        self.posts: Counter[int] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST":
            self.posts[response.status_code] += 1
        return response


def _insist(client: Any, spec: dict[str, Any]) -> str:
    """Submits until accepted, as a script that must get its job in would: the client waits
    out each 429's Retry-After itself (with jitter, a bounded number of times); past that,
    the script waits what the last answer asked and goes on."""
    from drtrain_client.errors import DrtrainError

    while True:
        try:
            return str(client.submit_job(spec)["id"])
        except DrtrainError as exc:
            if exc.status != 429:
                raise
            time.sleep(exc.retry_after or 1.0)


def backlog(stack: Stack, jobs: int = BACKLOG_JOBS) -> Row:
    """``jobs`` tiny jobs submitted one after another through ``drtrain_client`` (its own
    Retry-After backoff) to an API started with BACKLOG_ENV, then waited for: the time from
    the first submit to the last job's end, and the 429s answered on the way (one worker
    process, as the rest of this file's jobs)."""
    from drtrain_client import Client

    api = stack.start_api("api-backlog", BACKLOG_ENV)
    transport = _CountingTransport()
    started = time.monotonic()
    try:
        with Client(api, stack.key, transport=transport, timeout=60) as client:
            submitted = [_insist(client, {**TINY_JOB, "seed": i}) for i in range(jobs)]
            accepted = time.monotonic() - started
            ended = [client.wait(job_id, timeout=3600, poll=0.5) for job_id in submitted]
    finally:
        stack.stop("api-backlog")
    total = time.monotonic() - started
    succeeded = sum(job["status"] == "succeeded" for job in ended)
    return {"what": f"a backlog of {jobs} jobs, running cap {BACKLOG_ENV[CAP_SETTING]}",
            "value": f"all submitted in {accepted:.1f} s, all ended in {total:.1f} s; "
                     f"{succeeded} succeeded; POST answers {_answers(transport.posts)}",
            "ratio": None, "target": f"every job accepted at once (no 429), {jobs} succeeded",
            "met": succeeded == jobs and set(transport.posts) == {202}}


CAP_SETTING = "DRTRAIN_MAX_CONCURRENT_JOBS_PER_TENANT"


def _wait_terminal(client: httpx.Client, url: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(url).json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        # Times come from the job's own timestamps, so a slower poll loses no precision; at
        # 20 GETs a second this loop alone took a few percent of a core from the training
        # it times.
        time.sleep(0.2)
    raise TimeoutError(url)


def _seconds(job: dict[str, Any], start: str, end: str) -> float:
    parse = datetime.datetime.fromisoformat
    return (parse(job[end]) - parse(job[start])).total_seconds()


def queue_latency(stack: Stack, api: str, jobs: int = 12) -> Row:
    latencies = []
    with httpx.Client(headers=stack.auth, timeout=30) as client:
        for i in range(jobs + 1):
            resp = client.post(f"{api}/v1/jobs", json={**TINY_JOB, "seed": i})
            job = _wait_terminal(client, f"{api}/v1/jobs/{resp.json()['id']}")
            if job["status"] != "succeeded":
                raise RuntimeError(f"tiny job {job['status']}: {job['status_reason']}")
            if i:  # the first job warms the worker's pool process
                latencies.append(_seconds(job, "created_at", "started_at"))
            time.sleep(0.137)  # out of step with any polling
    p50 = median(latencies)
    return {"what": "queue latency (created -> started)",
            "value": f"p50 {p50 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms",
            "ratio": None, "target": "p50 < 150 ms" if stack.mode == "embedded" else "-",
            "met": p50 < 0.15 if stack.mode == "embedded" else None}


def _train(stack: Stack, api: str, client: httpx.Client, seed: int,
           during: Callable[[str], Any] | None = None) -> tuple[float, Any]:
    resp = client.post(f"{api}/v1/jobs", json={**WATCHED_JOB, "seed": seed})
    job_id = resp.json()["id"]
    extra = during(job_id) if during else None
    job = _wait_terminal(client, f"{api}/v1/jobs/{job_id}")
    if job["status"] != "succeeded":
        raise RuntimeError(f"watched job {job['status']}: {job['status_reason']}")
    return _seconds(job, "started_at", "finished_at"), extra


def streams(stack: Stack, api: str, repeats: int, watchers: int = 500) -> list[Row]:
    alone, watched, p99s, growths, served, api_cpu = [], [], [], [], [], []
    api_pid = stack.pid("api")
    # RSS growth is against the API before any stream ever opened: memory a first run took
    # and kept would otherwise not show in the next runs.
    baseline = rss_bytes(api_pid)
    with httpx.Client(headers=stack.auth, timeout=30) as client:
        _train(stack, api, client, 99)  # warm the worker
        for r in range(repeats):
            alone.append(_train(stack, api, client, r)[0])
            cpu_before = cpu_seconds(api_pid)

            def watch(job_id: str) -> dict[str, Any]:
                before = rss_bytes(api_pid)
                crowd = loadgen.Watchers(api, get(f"{api}/v1/jobs/{job_id}/events", stack.auth),
                                         watchers, seconds=300)
                peak = [before]
                stop = threading.Event()

                def sample() -> None:
                    while not stop.is_set():
                        peak[0] = max(peak[0], rss_bytes(api_pid))
                        time.sleep(0.2)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                time.sleep(2.0)  # the streams connect
                # A client polling its job 10 times a second (not flat out: the training
                # time measured meanwhile must not pay for the reads).
                reads = loadgen.run(api, [get(f"{api}/v1/jobs/{job_id}", stack.auth)],
                                    concurrency=1, seconds=4.0, pause=0.1)
                return {"crowd": crowd, "reads": reads, "before": before, "peak": peak,
                        "stop": stop}

            wall, seen = _train(stack, api, client, r, during=watch)
            api_cpu.append((cpu_seconds(api_pid) - cpu_before) / wall)
            result = seen["crowd"].result()
            seen["stop"].set()
            watched.append(wall)
            p99s.append(seen["reads"].quantile(0.99))
            growths.append(seen["peak"][0] - baseline)
            served.append((result.opened, result.ended, dict(result.refused)))
    slowdown = median(watched) / median(alone) - 1
    opened = min(o for o, _, _ in served)
    ended = min(e for _, e, _ in served)
    return [
        {"what": f"{watchers} event streams: streams opened / ended by the server",
         "value": f"{opened} / {ended} (worst run)", "ratio": None, "target": f"{watchers} / {watchers}",
         "met": opened == watchers and ended == watchers},
        {"what": f"{watchers} event streams: status GET p99", "value": f"{median(p99s) * 1000:.0f} ms",
         "ratio": None, "target": "< 100 ms", "met": median(p99s) < 0.1},
        {"what": f"{watchers} event streams: API RSS growth",
         "value": f"{max(growths) / 2**20:.0f} MB (largest run)", "ratio": None,
         "target": "< 150 MB", "met": max(growths) < 150 * 2**20},
        {"what": f"{watchers} event streams: training time",
         "value": f"{median(watched):.1f} s vs {median(alone):.1f} s alone ({slowdown:+.1%}); "
                  f"the API used {median(api_cpu):.0%} of a core meanwhile",
         "ratio": None, "target": "< +5%", "met": slowdown < 0.05},
    ]


# ---------------------------------------------------------------- one mode
PARTS = ("reads", "crowd", "submits", "latency", "backlog", "streams")


def measure(mode: str, repeats: int, seconds: float, parts: tuple[str, ...] = PARTS,
            source: Path = ROOT) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix=f"drtrain-bench-{mode}-") as tmp:
        stack = Stack(mode, Path(tmp), source)
        try:
            bare = stack.start_bare()
            api = stack.start_api()
            rows: list[Row] = []
            if "reads" in parts:
                rows += reads(stack, api, bare, repeats, seconds)
            if "crowd" in parts:
                rows.append(crowd(stack, api, repeats))
            if "submits" in parts:
                rows += submits(stack, api, repeats, seconds)
                rows.append(exactly_once(stack, api))
                rows.append(cap_under_load(stack))
                stack.forget_queued()
            if {"latency", "backlog", "streams"} & set(parts):
                stack.start_worker()
            if "latency" in parts:
                rows.append(queue_latency(stack, api))
            if "backlog" in parts:
                rows.append(backlog(stack))
            if "streams" in parts:
                rows += streams(stack, api, repeats)
            return rows
        except Exception:
            for name in ("api", "worker", "bare"):
                print(f"--- {name} log\n{stack.log(name)}", file=sys.stderr)
            raise
        finally:
            stack.close()


def verdict(row: Row) -> str:
    if row["ratio"] is not None:
        met = row["ratio"] >= row["target"]
        return f"{row['ratio']:.2f}x (target >= {row['target']}x): {'met' if met else 'NOT met'}"
    if row.get("met") is None:
        return "-"
    return f"{row['target']}: {'met' if row['met'] else 'NOT met'}"


def table(results: dict[str, list[Row]]) -> str:
    lines = ["| mode | measure | figure | against the target |", "|---|---|---|---|"]
    for mode, rows in results.items():
        lines += [f"| {mode} | {r['what']} | {r['value']} | {verdict(r)} |" for r in rows]
    return "\n".join(lines)


def section(results: dict[str, list[Row]], args: argparse.Namespace) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"""{BEGIN}
## The service under load (`bench/service.py`)

Command: `.venv/bin/python -m bench.service --modes {' '.join(args.modes)} --repeats {args.repeats}`.
Date: {datetime.date.today().isoformat()}; Python {platform.python_version()}; {os.cpu_count()} CPUs
(shared with other processes); uvicorn with its pure-Python HTTP parser (h11), one process,
`--log-level warning`, for the API and for the baseline alike.

Ratios are requests/s of the route against a bare FastAPI route (`bench/bare_app.py`: an
`async` GET returning a small JSON object) served the same way and measured in the same
run, alternating, median of {args.repeats}. Submits have no ratio: their latency and
correctness under load are in the next section (written by the same command). Load comes from `bench/loadgen.py` (keep-alive HTTP/1.1 clients in a separate
process; {args.seconds:g} s per measurement, 16 connections unless said). Embedded: SQLite,
filesystem broker, local objects; production: PostgreSQL and Redis on the same machine.
"500 event streams" watch one training job ({WATCHED_JOB['model']['hidden_layers']} on
`builtin:digits`) from a separate process; its training time (started to finished) is compared
with the same job run with nobody watching. The 200 MB CSV targets are in the Uploads section
(`bench/uploads.py`), and what the service adds to a training job is in the Service overhead
section (`bench/service_overhead.py`, its own command with 9 alternating runs of each arm).

{table(results)}

Where the time goes: the job, job-list and metrics-page GETs are answered by
`api/fast_reads.py` (a middleware in front of FastAPI, for the plain successful case with a
cached key, calling the routes' own `api/job_reads.py`), so they skip FastAPI's routing, which
the bare route pays: that is why a cached read can beat it. The status GET and the list above
are answered from memory (`api/job_cache.py`): no job changed between the reads, as when
clients poll a job that is not moving. The "job cache off" rows are what each read costs when
something changed since the last (SQLite read in place, PostgreSQL through one thread hop;
a 50-job list fetches and dumps 50 x 22 values). A 1,000-point metrics page is cheap when the
full page is cached; when it is not, the driver's fetch and the formatting of every timestamp
dominate. A plain submit is taken by `api/fast_submit.py` and, like every submit, committed
with the submits waiting alongside it (`drtrain/jobs/submit_batch.py` on
`drtrain/kit/group_commit.py`), answered right after the commit, and its message published
afterwards by a child process of the API (`drtrain/kit/publishing.py`), so Celery's message
building runs on the other core. Embedded, the filesystem broker writes one file per job, in
that child. With 500 streams the API writes once per stream per poll that found something new
(bytes encoded once for all the streams) and nothing on idle polls; on two shared cores that
CPU comes out of the training's.

Caveat: 2 shared cores; the API, the load generator, the database and the worker compete for
them, and other processes ran meanwhile (load average at the end: {load}). Rerun on a quiet
machine before comparing hardware.
{END}
"""


def submits_section(results: dict[str, list[Row]], args: argparse.Namespace) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"""{SUBMITS_BEGIN}
### Submits: latency, exactly-once and the limit under load (`bench/service.py`)

Command: `.venv/bin/python -m bench.service --modes {' '.join(args.modes)} --repeats {args.repeats} --seconds {args.seconds:g} --only submits backlog`
(also part of the full command). Date: {datetime.date.today().isoformat()}; Python
{platform.python_version()}; {os.cpu_count()} CPUs shared with other processes; load average at
the end: {load}.

Latency: `POST /v1/jobs` with a tiny job's spec from 1, 16 and 64 keep-alive clients at once
(`bench/loadgen.py`, a separate process), {args.seconds:g} s per level, the levels interleaved,
median of {args.repeats} (the p99's min–max in brackets); the jobs are cancelled after each.
The targets are what a person or a script needs: an answer well within a second even while 63
others submit at the same moment (10,000 jobs a day is 0.12 submits/s on average).
Exactly-once: 64 clients retrying with the same Idempotency-Keys at the same moment (each key
sent by many at once); each key must make one job (one 202, replays 200) and the tenant must
list one job per key. The limit: an API started with
{', '.join(f'`{k}={v}`' for k, v in CAPPED_ENV.items())}; one tenant submits one at a time until
the first 429 (the limit the API enforces, whatever it counts); a second tenant then sends 256
submits from 64 clients at once and must get exactly that many 202s, 429 for the rest, and
list that many jobs. A backlog: an API started with
{', '.join(f'`{k}={v}`' for k, v in BACKLOG_ENV.items())}; one script submits {BACKLOG_JOBS} tiny
jobs one after another through `drtrain_client` (which waits out a 429's `Retry-After` with
jitter, then the script waits and tries again) and waits for them all, run by one worker
process. Embedded: SQLite, filesystem broker; production: PostgreSQL and Redis.

{table(results)}
{SUBMITS_END}
"""


def comparison(mode: str, before: list[Row], after: list[Row]) -> str:
    """Each figure of ``after`` beside the same figure of ``before`` (another checkout served
    in the same run), with after / before of the ratios against the bare route."""
    lines = ["| mode | measure | before | after | after / before |", "|---|---|---|---|---|"]
    earlier = {row["what"]: row for row in before}
    for row in after:
        old = earlier.get(row["what"])
        change = (f"{row['ratio'] / old['ratio']:.2f}" if old and old["ratio"] and row["ratio"]
                  else "-")
        lines.append(f"| {mode} | {row['what']} | {old['value'] if old else '-'} | "
                     f"{row['value']} | {change} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=["embedded", "production"],
                        choices=["embedded", "production"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput measurement")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS),
                        help="measure only these parts (the main section is then left alone; "
                             "`--only submits backlog` still writes the submits section)")
    parser.add_argument("--no-write", action="store_true", help="print only, leave the docs alone")
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="also serve this checkout (e.g. a git worktree of an older commit) "
                             "in the same run and print both side by side (implies --no-write)")
    args = parser.parse_args()
    partial = set(args.only) != set(PARTS)
    if args.before:
        args.no_write = True
    results = {}
    for mode in args.modes:
        if args.before:
            before = measure(mode, args.repeats, args.seconds, tuple(args.only),
                             source=args.before.resolve())
            after = measure(mode, args.repeats, args.seconds, tuple(args.only))
            print(comparison(mode, before, after), flush=True)
            continue
        started = time.monotonic()
        results[mode] = measure(mode, args.repeats, args.seconds, tuple(args.only))
        print(f"{mode}: {time.monotonic() - started:.0f} s", file=sys.stderr)
        print(table({mode: results[mode]}), flush=True)
    if args.before:
        return
    submit_rows = {mode: [r for r in rows if r["what"].startswith(SUBMIT_ROWS)]
                   for mode, rows in results.items()}
    other_rows = {mode: [r for r in rows if not r["what"].startswith(SUBMIT_ROWS)]
                  for mode, rows in results.items()}
    if {"submits", "backlog"} & set(args.only):
        text = submits_section(submit_rows, args)
        if not args.no_write:
            write_section(text, SUBMITS_BEGIN, SUBMITS_END)
        print(text)
    if not partial:
        text = section(other_rows, args)
        if not args.no_write:
            write_section(text, BEGIN, END)
        print(text)


if __name__ == "__main__":
    main()
