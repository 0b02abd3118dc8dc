"""What one reaper round costs on a long history, and what its broker check reads from Redis.

Database: a synthetic history of ``--jobs`` ended jobs (bench/history.py) on PostgreSQL; one
round of ``worker.reaper.reap_once`` (with a store, so its leftover-checkpoint sweep runs,
and a broker check that finds every message present) timed without the partial index
``ix_checkpoints_resumable`` (as before it existed) and with it. Prints ms per round (median
of ``--rounds``; a round is several short transactions, so it is mostly round trips on an idle
history) and the execution ms and shared buffers of the sweep's query.

Redis: ``--queued`` messages waiting; the bytes one broker check moves (Redis's
``total_net_input_bytes`` + ``total_net_output_bytes``, less those of an empty command, on a
Redis nothing else is using: the smallest of 5): reading the whole queue and the unacked hash
(what the check did before) and asking about the jobs one round asks about
(``drtrain.kit.broker_messages.missing_from_broker``).

    .venv/bin/python -m bench.reaper_cost [--jobs 100000] [--queued 5000] [--rounds 20]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from sqlalchemy import Engine, text

from bench.history import fill_history
from bench.service_stack import scratch_database
from drtrain.kit.broker import publish_run_jobs
from drtrain.kit.broker_messages import UNACKED_KEY, missing_from_broker
from drtrain.kit.db import make_engine, make_sessionmaker
from drtrain.kit.settings import Settings
from drtrain.kit.storage import make_store
from worker.reaper import reap_once

REDIS_URL = "redis://127.0.0.1:6379/15"
SWEEP = ("SELECT DISTINCT checkpoints.job_id FROM checkpoints JOIN jobs ON jobs.id = "
         "checkpoints.job_id WHERE checkpoints.kind IN ('layer', 'epoch') AND jobs.status IN "
         "('succeeded', 'failed', 'cancelled') LIMIT 100")


def round_ms(engine: Engine, settings: Settings, rounds: int) -> float:
    factory, store = make_sessionmaker(engine), make_store(settings)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        reap_once(settings, factory, publish=lambda _id: None, missing=lambda ids: set(),
                  store=store)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def sweep_cost(engine: Engine) -> tuple[float, int]:
    """The leftover-checkpoint query's execution ms and shared buffers read."""
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {SWEEP}").scalar_one()
    top = plan[0]["Plan"]
    buffers = int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))
    return float(plan[0]["Execution Time"]), buffers


def database_part(jobs: int, rounds: int, data_dir: Path) -> None:
    with scratch_database("reaper") as url:
        engine = make_engine(url)
        with engine.begin() as conn:
            fill_history(conn, jobs, live=0)
        settings = Settings(data_dir=data_dir, database_url=url, environment="test",
                            storage_url=(data_dir / "objects").as_uri())
        results = {}
        for label in ("with the partial index", "without it"):
            if label == "without it":
                with engine.begin() as conn:
                    conn.execute(text("DROP INDEX ix_checkpoints_resumable"))
            results[label] = (round_ms(engine, settings, rounds), *sweep_cost(engine))
        engine.dispose()
        for label, (ms, query_ms, buffers) in results.items():
            print(f"{jobs:,} ended jobs, {label}: {ms:.2f} ms per reaper round (median of "
                  f"{rounds}); the sweep query {query_ms:.2f} ms, {buffers:,} buffers "
                  f"({buffers * 8 // 1024:,} MiB)")


def bytes_moved(client: redis.Redis, call: Callable[[], object]) -> int:
    def net() -> int:
        stats = client.info("stats")
        return int(stats["total_net_input_bytes"]) + int(stats["total_net_output_bytes"])

    def once(fn: Callable[[], object]) -> int:
        before = net()
        fn()
        return net() - before

    empty = min(once(lambda: None) for _ in range(5))  # the INFO calls themselves
    return min(once(call) for _ in range(5)) - empty


def redis_part(queued: int) -> None:
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(broker_url=REDIS_URL, environment="test")
    client = redis.Redis.from_url(REDIS_URL)
    ids = [uuid.uuid4().hex for _ in range(queued)]
    try:
        for start in range(0, queued, 500):
            publish_run_jobs(settings, ids[start:start + 500], queue=queue)
        asked = ids[:1000]  # a round asks about the oldest 1000 stale jobs at most

        def whole() -> None:
            fresh = redis.Redis.from_url(REDIS_URL)
            fresh.lrange(queue, 0, -1)
            fresh.hvals(UNACKED_KEY)
            fresh.close()

        before = bytes_moved(client, whole)
        after = bytes_moved(client, lambda: missing_from_broker(settings, queue=queue,
                                                                wanted=asked))
        print(f"{queued:,} queued messages: {before:,} bytes per broker check reading the "
              f"whole queue and unacked hash, {after:,} bytes asking about {len(asked):,} jobs")
    finally:
        client.delete(queue)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--queued", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        database_part(args.jobs, args.rounds, Path(tmp))
    if not args.skip_redis:
        redis_part(args.queued)


if __name__ == "__main__":
    main()
