"""The counts a submit reads under its tenant's lock (``drtrain.jobs.queue._COUNTS``: the
tenant's dispatched and waiting jobs and its stored bytes) on
PostgreSQL, with and without the index ``ix_jobs_tenant_status`` (migration 0007), for a
tenant with many finished jobs and some active ones. Prints ms per count (mean of 200).

    .venv/bin/python -m bench.active_count [--jobs 100000] [--active-every 50]
"""
from __future__ import annotations

import argparse
import time

from sqlalchemy import Engine, text

from bench.service_stack import scratch_database
from drtrain.jobs import queue as q
from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.tenants.keys import create_key

FILL = """INSERT INTO jobs (id, tenant_id, dataset_id, spec, status, request_hash, attempt,
    max_attempts, progress, created_at, dispatched_at, updated_at, cancel_requested, tags,
    warnings)
  SELECT md5(g::text), :tenant, 'builtin:digits', '{}',
         CASE WHEN g % :every = 0 THEN 'queued' ELSE 'succeeded' END, 'x', 1, 3, 1.0,
         now(), now(), now(), false, '[]', '[]'
  FROM generate_series(1, :n) g"""


def per_count(engine: Engine, tenant: str, repeats: int = 200) -> tuple[float, int]:
    with engine.connect() as conn:
        conn.execute(q._COUNTS, {"tenant_id": tenant}).one()
        started = time.perf_counter()
        for _ in range(repeats):
            active = conn.execute(q._COUNTS, {"tenant_id": tenant}).one()[0]
        return (time.perf_counter() - started) / repeats * 1000, active


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--active-every", type=int, default=50)
    args = parser.parse_args()
    with scratch_database("count") as url:
        engine = make_engine(url)
        with session_scope(make_sessionmaker(engine)) as s:
            create_key(s, "counted")
        with engine.begin() as conn:
            tenant = conn.execute(text("SELECT id FROM tenants")).scalar_one()
            conn.execute(text(FILL), {"tenant": tenant, "every": args.active_every,
                                      "n": args.jobs})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE jobs"))
        with_index, active = per_count(engine, tenant)
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_jobs_tenant_status"))
        without, _ = per_count(engine, tenant)
        engine.dispose()
        print(f"{args.jobs:,} jobs, {active:,} active: {with_index:.3f} ms per count with "
              f"ix_jobs_tenant_status, {without:.3f} ms without")


if __name__ == "__main__":
    main()
