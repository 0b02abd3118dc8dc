"""Every statement of a reaper round is served by an index on a long history: the round's
statements are captured while it runs on a 100k-job synthetic history in PostgreSQL, then
EXPLAINed; a sequential scan of a big table fails the test."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from bench.history import fill_history
from drtrain.kit.db import make_engine, make_sessionmaker
from drtrain.kit.settings import Settings
from drtrain.kit.storage import make_store
from tests.pg import fresh_database
from worker.reaper import reap_once

BIG_TABLES = {"jobs", "checkpoints", "metric_points"}


@pytest.fixture(scope="module")
def history_engine() -> Iterator[Engine]:
    with fresh_database("plans") as url:
        engine = make_engine(url)
        with engine.begin() as conn:
            fill_history(conn, 100_000)
        yield engine
        engine.dispose()


def _seq_scans(plan: dict[str, Any]) -> list[str]:
    found = []
    if plan.get("Node Type") == "Seq Scan" and plan.get("Relation Name") in BIG_TABLES:
        found.append(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found += _seq_scans(child)
    return found


def test_a_reaper_round_scans_no_big_table(history_engine: Engine, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=str(history_engine.url),
                        storage_url=(tmp_path / "objects").as_uri(), environment="test",
                        requeue_queued_after_seconds=1.0)
    statements: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT")):
            statements.append((statement, parameters))

    event.listen(history_engine, "before_cursor_execute", capture)
    try:
        did = reap_once(settings, make_sessionmaker(history_engine), publish=lambda _id: None,
                        missing=lambda ids: set(), store=make_store(settings))
    finally:
        event.remove(history_engine, "before_cursor_execute", capture)
    assert did == {"requeued": [], "republished": [], "dispatched": []}
    tables = " ".join(s for s, _ in statements)
    assert "checkpoints" in tables and "jobs" in tables  # the sweep and the queued scan ran
    assert "dispatched_at IS NULL" in tables  # and the look for tenants' waiting jobs
    scans = {}
    with history_engine.connect() as conn:
        for statement, parameters in statements:
            plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}",
                                        parameters).scalar_one()
            if found := _seq_scans(plan[0]["Plan"]):
                scans[statement] = found
        conn.rollback()
    assert not scans, scans
