"""What bench/scale.py reads from outside the service: PostgreSQL's transaction counters of
one database, Redis's command counters, the connections to that database over time, the
jobs' statuses, and the rounds the elected reaper wrote down (bench/sleep_worker.py)."""
from __future__ import annotations

import collections
import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, text

# Its own connections show under this name, so the connection counts leave them out.
BENCH_APPLICATION = "bench-scale"
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Snapshot:
    """Counters at one moment: ``pg_xacts`` is xact_commit + xact_rollback of the database,
    ``redis_calls`` each command's calls (INFO commandstats; INFO itself left out, since
    reading the counters is the bench's own)."""
    at: float
    wall: float
    pg_xacts: int
    redis_calls: dict[str, int]

    def redis_since(self, before: Snapshot) -> dict[str, int]:
        return {cmd: n - before.redis_calls.get(cmd, 0) for cmd, n in self.redis_calls.items()
                if n - before.redis_calls.get(cmd, 0) > 0}


class Counters:
    def __init__(self, admin: Engine, database: str, client: redis.Redis) -> None:
        self.admin, self.database, self.client = admin, database, client

    def read(self) -> Snapshot:
        with self.admin.connect() as conn:  # autocommit: each read is a fresh stats snapshot
            xacts = conn.execute(text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :d"),
                {"d": self.database}).scalar_one()
        stats = self.client.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
                 if name != "cmdstat_info"}
        return Snapshot(time.monotonic(), time.time(), int(xacts), calls)


class JobCounts:
    """Ended jobs, read in SQL; ``queries`` counts the transactions this adds to the
    database's counters (each read is one, in autocommit)."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url, isolation_level="AUTOCOMMIT", pool_size=1,
                                    connect_args={"application_name": BENCH_APPLICATION})
        self.queries = 0

    def ended(self) -> tuple[int, int]:
        """(jobs ended, of which failed)."""
        self.queries += 1
        with self.engine.connect() as conn:
            row = conn.execute(text(
                "SELECT count(*) FILTER (WHERE status::text = ANY(:ended)), "
                "count(*) FILTER (WHERE status::text = 'failed') FROM jobs"),
                {"ended": list(TERMINAL)}).one()
        return int(row[0]), int(row[1])

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class ConnectionSampler:
    """Samples pg_stat_activity of ``database`` every ``every`` seconds on a thread, from
    the admin database (so sampling adds nothing to ``database``'s counters); each sample is
    filed under the phase current when it was taken."""
    admin: Engine
    database: str
    every: float = 0.2
    phase: str = "start"
    samples: dict[str, list[collections.Counter[tuple[str, str]]]] = field(
        default_factory=lambda: collections.defaultdict(list))
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="connection-sampler",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        query = text("SELECT coalesce(application_name, ''), coalesce(state, ''), count(*) "
                     "FROM pg_stat_activity WHERE datname = :d AND application_name <> :me "
                     "GROUP BY 1, 2")
        while not self._stop.wait(self.every):
            with self.admin.connect() as conn:
                rows = conn.execute(query, {"d": self.database, "me": BENCH_APPLICATION}).all()
            self.samples[self.phase].append(
                collections.Counter({(app, state): int(n) for app, state, n in rows}))

    def summary(self, phase: str) -> dict[str, dict[str, float]]:
        """Per application_name: the most connections seen at once, their mean, and the most
        and mean busy ones (any state but idle: in a query or a transaction) at once."""
        samples = self.samples.get(phase, [])
        apps = sorted({app for s in samples for app, _ in s})
        out = {}
        for app in apps:
            totals = [sum(n for (a, _), n in s.items() if a == app) for s in samples]
            busy = [sum(n for (a, st), n in s.items() if a == app and st != "idle")
                    for s in samples]
            out[app] = {"max": max(totals), "mean": statistics.fmean(totals),
                        "busy_max": max(busy), "busy_mean": statistics.fmean(busy)}
        return out


def reaper_rounds(folder: Path) -> list[dict[str, Any]]:
    """Every round the workers' reapers wrote down, with the pid of the worker that ran it."""
    rounds = []
    for path in sorted(folder.glob("reaper-*.jsonl")):
        pid = int(path.stem.removeprefix("reaper-"))
        rounds += [{**json.loads(line), "pid": pid} for line in path.read_text().splitlines()
                   if line.strip()]
    return sorted(rounds, key=lambda r: r["at"])
