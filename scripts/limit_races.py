"""The red-team figures of the limits' races, measured against real API processes on
PostgreSQL and SQLite (``tests.load.server``; set DRTRAIN_LOAD_SERVER_TREE to another
checkout to measure its code). Run from the repository root:

    python -m scripts.limit_races [cap] [pairs] [uploads] [disk]   # default: all four

Prints, per database: the jobs a tenant holds after 9 plain and 20 keyed submits at a cap
of 8, and after 60 submits at once (half keyed); how many of 32 concurrent (dataset delete,
submit on it) pairs both succeeded; the bytes held after 4 uploads of 600 kB at once against
a 1 MB quota; and (PostgreSQL) the statuses of a plain submit, a keyed one and a sweep while
the database refuses writes with disk_full."""
from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx

from tests.load import races
from tests.load.server import SPEC, Api, pg_api, sqlite_api

DISK_FULL_TRIGGER = """
CREATE FUNCTION refuse_for_want_of_space() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'No space left on device' USING ERRCODE = '53100'; END $$;
CREATE TRIGGER disk_full BEFORE INSERT ON jobs
  FOR EACH ROW EXECUTE FUNCTION refuse_for_want_of_space();
"""


def _full_disk_statuses(server: Api) -> list[str]:
    headers = server.new_tenant("full-disk")
    httpx.get(f"{server.url}/v1/jobs", headers=headers).raise_for_status()  # key cached
    with server.engine.begin() as conn:
        conn.exec_driver_sql(DISK_FULL_TRIGGER)
    out = []
    with httpx.Client(timeout=30) as client:
        for what, path, body, extra in (
                ("plain", "/v1/jobs", SPEC, {}),
                ("keyed", "/v1/jobs", SPEC, {"Idempotency-Key": "full"}),
                ("sweep", "/v1/sweeps", {"base": SPEC, "grid": {"seed": [1, 2]}}, {})):
            try:
                status = str(client.post(server.url + path, json=body,
                                         headers={**headers, **extra}).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            out.append(f"{what} {status}")
    ready = httpx.get(f"{server.url}/readyz")
    out.append(f"readyz {ready.status_code} {ready.json().get('checks')}")
    return out


def measure(name: str, make: Callable[..., AbstractContextManager[Api]],
            which: set[str]) -> None:
    root = Path(tempfile.mkdtemp(prefix=f"limit-races-{name}-"))
    # No queue behind the cap: the figures count what a cap of 8 alone lets through.
    with make(root, max_concurrent_jobs_per_tenant="8", max_queued_jobs_per_tenant="0",
              tenant_storage_quota_bytes="1000000") as server:
        if "cap" in which:
            plain, keyed, held = races.plain_then_keyed(server, "keyed", 9, 20)
            print(f"{name}: 9 plain then 20 keyed at a cap of 8: plain {plain}, "
                  f"keyed {keyed}, jobs held {held}")
            statuses, held = races.mixed_at_once(server, "mixed", 60)
            print(f"{name}: 60 at once, half keyed: {dict(statuses)}, jobs held {held}")
        if "pairs" in which:
            both, outcomes = races.delete_submit_pairs(server, "deleter", 32)
            print(f"{name}: delete+submit pairs both succeeded: {both}/32 "
                  f"((delete, submit): {dict(outcomes)})")
        if "uploads" in which:
            uploads, held = races.concurrent_uploads(server, "uploader", 4, 600_000)
            print(f"{name}: 4 uploads of 600 kB at once, 1 MB quota: {uploads}, "
                  f"bytes held {held}")
        if "disk" in which and name == "postgresql":
            print(f"{name}: disk full: {_full_disk_statuses(server)}")


def main() -> None:
    which = set(sys.argv[1:]) or {"cap", "pairs", "uploads", "disk"}
    measure("postgresql", pg_api, which)
    measure("sqlite", sqlite_api, which)


if __name__ == "__main__":
    main()
