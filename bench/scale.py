"""The control plane at scale: production mode (PostgreSQL, Redis) with ``--workers`` worker
processes draining ``--jobs`` queued jobs that only sleep (bench/sleep_worker.py: the claim,
heartbeat, metrics, finish and reaper run for real; dr_core does not), so what is measured is
the service's own cost per job and per worker.

    python -m bench.scale [--workers 3] [--jobs 1000] [--sleep 0.2] [--epochs 2] [--no-write]

Three phases, each measured on its own:

1. submit: the API alone takes the jobs over HTTP (16 keep-alive clients, one tenant whose
   running cap is raised out of the way by the stack's environment);
2. drain: the workers (``drtrain worker --name scaleN`` through the sleep entry) start and
   run every job to its end; ended jobs are counted in SQL every 0.5 s;
3. idle: 15 s with the workers waiting for work.

PostgreSQL: xact_commit + xact_rollback of the scratch database (pg_stat_database), read
after at least 11 s without activity (a backend sends its counts within 10 s of going idle),
less the bench's own reads. Redis: the calls of INFO commandstats (the server's, so run it
when nothing else uses this Redis; INFO itself is left out). Connections: pg_stat_activity
of the database every 0.2 s, by application_name. The reaper: each round its elected worker
ran, timed and counted in that worker (bench/sleep_worker.py). Writes the "Control plane at
scale" section of docs/benchmarks.md with a projection to 100 workers and 10,000 jobs/day
(bench/scale_extrapolation.py).
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, make_url, text

from bench.benchmarks_doc import write_section
from bench.scale_extrapolation import Measured, project
from bench.scale_probes import ConnectionSampler, Counters, JobCounts, Snapshot, reaper_rounds
from bench.service_stack import PG_ADMIN_URL, Stack
from bench.sleep_worker import DIR_ENV, EPOCHS_ENV, SLEEP_SECONDS_ENV
from drtrain.kit.settings import Settings

BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
SETTLE_SECONDS = 11.0  # PostgreSQL 15 sends an idle backend's counts within 10 s
IDLE_SECONDS = 15.0
POLL_SECONDS = 0.5
SUBMITTERS = 16
SPEC = {"dataset_id": "builtin:digits", "model": {"hidden_layers": [8]},
        "pretrain": {"epochs": 1}, "finetune": {"epochs": 1}}
WORKER_APP, REAPER_APP = "drtrain-worker", "drtrain-reaper"
API_APPS = ("drtrain-api", "drtrain-job-changes")


@dataclass(frozen=True)
class Run:
    args: argparse.Namespace
    submit_s: float
    first_submit_to_last_end_s: float
    workers_ready_s: float  # from starting the workers to all ready
    drain_s: float  # from every worker ready to the last job ended
    failed: int
    snaps: dict[str, Snapshot]  # before/after each phase: a, b, c, d
    polls_in_drain: int
    connections: dict[str, dict[str, dict[str, float]]]
    rounds: dict[str, list[dict[str, Any]]]
    max_connections: int


# ---------------------------------------------------------------- phases
def submit_all(url: str, auth: dict[str, str], jobs: int) -> None:
    limits = httpx.Limits(max_connections=SUBMITTERS, max_keepalive_connections=SUBMITTERS)
    with httpx.Client(base_url=url, headers=auth, timeout=120, limits=limits) as client:
        def one(_: int) -> int:
            return client.post("/v1/jobs", json=SPEC).status_code
        with ThreadPoolExecutor(SUBMITTERS) as pool:
            codes = list(pool.map(one, range(jobs)))
    refused = [c for c in codes if c != 202]
    if refused:
        raise RuntimeError(f"{len(refused)} submits refused (codes {sorted(set(refused))})")


def start_workers(stack: Stack, n: int, folder: Path, args: argparse.Namespace) -> list[int]:
    env = {SLEEP_SECONDS_ENV: str(args.sleep), EPOCHS_ENV: str(args.epochs), DIR_ENV: str(folder)}
    return [stack.start_process(f"scale{i}", [sys.executable, "-m", "bench.sleep_worker",
                                              "worker", "--name", f"scale{i}",
                                              "--loglevel", "WARNING"], env).pid
            for i in range(n)]


def wait_ready(stack: Stack, pids: list[int], folder: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not all((folder / f"ready-{pid}").exists() for pid in pids):
        for name, proc in stack.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{stack.log(name)}")
        if time.monotonic() > deadline:
            raise TimeoutError("workers not ready in time")
        time.sleep(0.1)


def wait_ended(counts: JobCounts, jobs: int, timeout: float) -> int:
    """Waits until every job has ended; returns how many failed."""
    deadline = time.monotonic() + timeout
    while True:
        ended, failed = counts.ended()
        if ended >= jobs:
            return failed
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ended} of {jobs} jobs ended in {timeout:.0f} s")
        time.sleep(POLL_SECONDS)


def measure(stack: Stack, root: Path, args: argparse.Namespace) -> Run:
    database = make_url(stack.database_url).database or ""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    counters, counts = Counters(admin, database, stack.redis), JobCounts(stack.database_url)
    sampler = ConnectionSampler(admin, database)
    folder = root / "scale"
    folder.mkdir()
    try:
        with admin.connect() as conn:
            max_connections = int(conn.execute(text("SHOW max_connections")).scalar_one())
        url = stack.start_api()
        sampler.start()
        time.sleep(SETTLE_SECONDS)
        snaps = {"a": counters.read()}
        sampler.phase = "submit"
        first_submit = time.monotonic()
        submit_all(url, stack.auth, args.jobs)
        submit_s = time.monotonic() - first_submit
        time.sleep(SETTLE_SECONDS)
        snaps["b"] = counters.read()
        sampler.phase = "drain"
        polls_before = counts.queries
        launched = time.monotonic()
        pids = start_workers(stack, args.workers, folder, args)
        wait_ready(stack, pids, folder)
        ready = time.monotonic()
        failed = wait_ended(counts, args.jobs,
                            timeout=300 + 10 * args.jobs * args.sleep / args.workers)
        snaps["c"] = counters.read()
        sampler.phase = "idle"
        time.sleep(IDLE_SECONDS)
        snaps["d"] = counters.read()
        sampler.stop()
        rounds = reaper_rounds(folder)
        return Run(args=args, submit_s=submit_s,
                   first_submit_to_last_end_s=snaps["c"].at - first_submit,
                   workers_ready_s=ready - launched, drain_s=snaps["c"].at - ready,
                   failed=failed, snaps=snaps, polls_in_drain=counts.queries - polls_before,
                   connections={p: sampler.summary(p) for p in ("submit", "drain", "idle")},
                   rounds={"drain": [r for r in rounds if r["at"] <= snaps["c"].wall],
                           "idle": [r for r in rounds if r["at"] > snaps["c"].wall]},
                   max_connections=max_connections)
    finally:
        sampler.stop()
        counts.close()
        admin.dispose()


# ---------------------------------------------------------------- figures
def _round_xacts(rounds: list[dict[str, Any]]) -> int:
    return sum(r["commits"] + r["rollbacks"] for r in rounds)


def figures(run: Run) -> dict[str, Any]:
    a, b, c, d = (run.snaps[k] for k in "abcd")
    jobs, n = run.args.jobs, run.args.workers
    # d - b holds the drain and the idle phase: the idle phase's transactions are the
    # reaper's rounds (nothing else touches the database while nothing runs).
    pg_drain = d.pg_xacts - b.pg_xacts - run.polls_in_drain - _round_xacts(run.rounds["idle"])
    redis_submit, redis_drain = b.redis_since(a), c.redis_since(b)
    redis_idle = d.redis_since(c)
    idle_s = d.at - c.at
    drain_conn = run.connections["drain"]
    worker_conn = drain_conn.get(WORKER_APP, {"max": 0, "mean": 0, "busy_max": 0})
    api_conn = sum(max(run.connections[p].get(app, {}).get("max", 0)
                       for p in ("submit", "drain")) for app in API_APPS)
    reaper_s = Settings.model_fields["heartbeat_seconds"].default  # its round interval
    idle_rounds = run.rounds["idle"]
    return {
        "jobs_per_s_e2e": jobs / run.first_submit_to_last_end_s,
        "jobs_per_s_drain": jobs / run.drain_s,
        "pg_submit": b.pg_xacts - a.pg_xacts,
        "pg_drain": pg_drain,
        "redis_submit": redis_submit, "redis_drain": redis_drain, "redis_idle": redis_idle,
        "idle_s": idle_s,
        "worker_conn": worker_conn, "api_conn": api_conn,
        "reaper_conn": drain_conn.get(REAPER_APP, {"max": 0}),
        # Little's law: transactions in flight at once = transactions/s x their duration
        "busy_mean": sum(drain_conn.get(app, {}).get("busy_mean", 0)
                         for app in (WORKER_APP, REAPER_APP)),
        "measured": Measured(
            workers=n, jobs_per_s_per_worker=jobs / run.drain_s / n,
            pg_xacts_per_job=pg_drain / jobs,
            pg_xacts_per_submit=(b.pg_xacts - a.pg_xacts) / jobs,
            redis_per_job=sum(redis_drain.values()) / jobs,
            redis_per_submit=sum(redis_submit.values()) / jobs,
            redis_idle_per_worker_s=sum(redis_idle.values()) / idle_s / n,
            reaper_pg_xacts_per_s=(_round_xacts(idle_rounds) / len(idle_rounds) / reaper_s
                                   if idle_rounds else 0.0),
            connections_per_worker=worker_conn["max"] / n, connections_api=api_conn,
            heartbeat_seconds=Settings.model_fields["heartbeat_seconds"].default),
    }


def _top(calls: dict[str, int], k: int = 6) -> str:
    return ", ".join(f"{cmd} {n:,}" for cmd, n in sorted(calls.items(), key=lambda x: -x[1])[:k])


def _rounds_row(label: str, rounds: list[dict[str, Any]]) -> str:
    if not rounds:
        return f"| {label} | 0 | - | - | - | - | - |"
    ms = [1000 * r["seconds"] for r in rounds]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)
    return (f"| {label} | {len(rounds)} | {statistics.median(ms):.1f} | {max(ms):.1f} | "
            f"{med('statements'):g} | {med('commits') + med('rollbacks'):g} | "
            f"{med('redis_commands'):g} |")


def report(run: Run, f: dict[str, Any], command: str) -> str:
    args, m = run.args, f["measured"]
    jobs, n = args.jobs, args.workers
    redis_drain, redis_idle = sum(f["redis_drain"].values()), sum(f["redis_idle"].values())
    pg_rate = f["pg_drain"] / run.drain_s
    wc = f["worker_conn"]
    p = project(m)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    busy_per_xact = f["busy_mean"] / pg_rate if pg_rate else 0.0
    return f"""{BEGIN}
## Control plane at scale (`bench/scale.py`)

Command: `{command}`. Date: {time.strftime("%Y-%m-%d")}; {platform.machine()} Linux,
{os.cpu_count()} CPUs, shared with whatever else ran (load average at the end: {load});
Python {platform.python_version()}; PostgreSQL
and Redis on the same machine, the object store a local folder (sleep jobs store nothing).

Production mode (PostgreSQL, Redis) with {n} workers started as `drtrain worker --name
scaleN` through `bench/sleep_worker.py`, whose training processes replace training (data,
dr_core, the final model) by a {args.sleep:g} s sleep in {args.epochs} epochs, each epoch's
5 metrics and progress recorded by the runner's own recorder: the claim, lease and heartbeat,
cancel watch, job log, finish and the elected reaper run as in production. {jobs:,} jobs are
submitted over HTTP by 16 keep-alive clients to the API alone, then the workers start and
drain them. One tenant, its cap raised out of the way
(`DRTRAIN_MAX_CONCURRENT_JOBS_PER_TENANT=1000000`, the stack's setting). PostgreSQL:
xact_commit + xact_rollback of the scratch database, read after 11 s without activity, less
the bench's own reads; Redis: INFO commandstats calls (INFO left out; they are the whole
server's: the run held the lock other sessions' Redis tests take, and only drtrain's own
commands showed); connections: pg_stat_activity every 0.2 s by application_name.
{run.failed} of the jobs failed.

| measure | figure |
|---|---|
| submit {jobs:,} jobs (16 clients, API alone) | {run.submit_s:.1f} s, {jobs / run.submit_s:.0f} submits/s |
| start {n} workers (to ready) | {run.workers_ready_s:.1f} s |
| drain: every worker ready to the last job ended | {run.drain_s:.1f} s: {f["jobs_per_s_drain"]:.1f} jobs/s, {m.jobs_per_s_per_worker:.2f} per worker (a job's sleep alone allows {1 / args.sleep:.1f}) |
| first submit to last job ended, less the bench's 11 s pause | {run.first_submit_to_last_end_s - SETTLE_SECONDS:.1f} s: {jobs / (run.first_submit_to_last_end_s - SETTLE_SECONDS):.1f} jobs/s |
| PostgreSQL transactions, submits | {f["pg_submit"]:,}: {m.pg_xacts_per_submit:.2f} per submit |
| PostgreSQL transactions, drain | {f["pg_drain"]:,}: {m.pg_xacts_per_job:.2f} per job; {pg_rate:.0f}/s, {pg_rate / n:.0f}/s per worker |
| Redis commands, submits | {sum(f["redis_submit"].values()):,}: {m.redis_per_submit:.2f} per submit ({_top(f["redis_submit"])}) |
| Redis commands, drain | {redis_drain:,}: {m.redis_per_job:.2f} per job; {redis_drain / run.drain_s:.0f}/s, {redis_drain / run.drain_s / n:.0f}/s per worker ({_top(f["redis_drain"])}) |
| Redis commands, idle ({f["idle_s"]:.0f} s) | {redis_idle / f["idle_s"]:.1f}/s, {m.redis_idle_per_worker_s:.1f}/s per worker ({_top(f["redis_idle"])}) |
| connections of the workers (`{WORKER_APP}`), drain | at most {wc["max"]:g} at once ({wc["max"] / n:.2f} per worker), mean {wc["mean"]:.1f}; busy at most {wc["busy_max"]:g}, mean {wc["busy_mean"]:.2f} |
| connections of the reaper (`{REAPER_APP}`), drain | at most {f["reaper_conn"]["max"]:g} in the 0.2 s samples (one while a round runs, none between: a round shorter than a sample's interval can fall between two samples) |
| connections of the API (`drtrain-api` + `drtrain-job-changes`) | at most {f["api_conn"]:g} |

The reaper (one per cluster, elected by its Redis lease; rounds every
{Settings.model_fields["heartbeat_seconds"].default:g} s; medians per round, timed and counted
in the worker that ran them; transactions are its commits and rollbacks):

| phase | rounds | ms | max ms | SQL statements | transactions | Redis commands |
|---|---|---|---|---|---|---|
{_rounds_row("drain", run.rounds["drain"])}
{_rounds_row("idle", run.rounds["idle"])}

### Projected to {p.workers} workers and {p.jobs_per_day:,} jobs a day

Basis: per-worker rates measured here x {p.workers}, per-job costs x jobs/s; the workers
behave alike (the figures above are totals divided by {n}). Every figure is the cluster's,
one API process.

- **Peak**, every worker ending a {args.sleep:g} s job and taking the next as fast as here, and
  jobs submitted as fast: {p.peak_jobs_per_s:.0f} jobs/s, {p.peak_pg_xacts_per_s:,.0f}
  PostgreSQL transactions/s ((per job {m.pg_xacts_per_job:.2f} + per submit
  {m.pg_xacts_per_submit:.2f}) x jobs/s) and {p.peak_redis_per_s:,.0f} Redis commands/s.
  Busy connections at once, by Little's law from this run ({f["busy_mean"]:.2f} busy on
  average at {pg_rate:.0f} transactions/s): about {p.peak_pg_xacts_per_s * busy_per_xact:.0f}.
  This machine did not run it: {n} workers here already shared 2 cores with PostgreSQL.
- **{p.jobs_per_day:,} jobs a day** ({p.day_jobs_per_s:.3f} jobs/s), all {p.workers} workers busy
  all day: {p.day_pg_xacts_per_s:.1f} transactions/s, of which {p.workers / m.heartbeat_seconds:.0f}
  are heartbeats (one per running job every {m.heartbeat_seconds:g} s, the setting; the sleep
  jobs end before a second beat), {p.day_jobs_per_s * (m.pg_xacts_per_job + m.pg_xacts_per_submit):.1f}
  the jobs' own (each epoch of a longer job adds its metric and progress transaction) and
  {m.reaper_pg_xacts_per_s:.2f} the reaper's idle rounds; {p.day_redis_per_s:.0f} Redis
  commands/s, nearly all the workers' polling for work ({m.redis_idle_per_worker_s:.1f}/s each,
  measured idle).
- **Connections**: {m.connections_per_worker:.2f} per worker at most (as sampled; a worker's
  second connection lives only while its heartbeat and recorder overlap, and the budget in
  docs/operations.md allows 2) x {p.workers} + 1 (the reaper's round) + {m.connections_api}
  for the API = about {p.connections:.0f}. docs/operations.md
  sizes PostgreSQL without a pooler at 2 x workers + 33 per API process + a few (about 280
  for 100 workers and 2 API processes): that covers it; this PostgreSQL's `max_connections`
  is {run.max_connections}. With PgBouncer in transaction mode (compose: `DEFAULT_POOL_SIZE`
  60), PostgreSQL needs the busy connections only: the peak's {p.peak_pg_xacts_per_s * busy_per_xact:.0f}
  against a pool of 60, a day's {p.day_pg_xacts_per_s * busy_per_xact:.1f}.
{END}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds a job sleeps")
    parser.add_argument("--epochs", type=int, default=2, help="epochs recorded per job")
    parser.add_argument("--no-write", action="store_true", help="print, do not write the doc")
    args = parser.parse_args(argv)

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # the finally blocks below stop every process, drop the db

    signal.signal(signal.SIGTERM, interrupted)
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        stack = Stack("production", Path(tmp))
        try:
            run = measure(stack, Path(tmp), args)
        except BaseException:
            for name in stack.procs:
                print(f"--- {name} log\n{stack.log(name)}", file=sys.stderr)
            raise
        finally:
            stack.close()
    command = " ".join(["python -m bench.scale", *(argv if argv is not None else sys.argv[1:])])
    text_ = report(run, figures(run), command)
    print(text_)
    if not args.no_write:
        write_section(text_, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
