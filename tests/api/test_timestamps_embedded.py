"""Embedded mode (SQLite) answers timestamps exactly as production (PostgreSQL) does: UTC with
an offset (``...Z``). SQLite keeps no offset, so before the fix it answered naive times."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from drtrain.kit.db import session_scope
from drtrain.kit.models import JobStatus
from tests.factories import add_local_job


def test_sqlite_timestamps_carry_the_utc_offset(embedded) -> None:  # noqa: ANN001
    client, auth, factory = embedded
    with session_scope(factory) as s:
        job = add_local_job(s, status=JobStatus.succeeded,
                   started_at=datetime(2024, 5, 6, 7, 8, 9, 250000),
                   finished_at=datetime(2024, 5, 6, 9, 8, 9, 500000,
                                        tzinfo=timezone(timedelta(hours=2))))
    body = client.get(f"/v1/jobs/{job.id}", headers=auth).json()
    assert body["started_at"] == "2024-05-06T07:08:09.250000Z"
    assert body["finished_at"] == "2024-05-06T07:08:09.500000Z"
    assert body["created_at"].endswith("Z")
    listed = client.get("/v1/jobs", headers=auth).json()["items"]
    assert listed[0]["created_at"] == body["created_at"]


def test_sqlite_cursor_pagination_still_works_with_aware_times(embedded) -> None:  # noqa: ANN001
    client, auth, factory = embedded
    base = datetime(2024, 1, 1, tzinfo=UTC)
    with session_scope(factory) as s:
        ids = [add_local_job(s, created_at=base + timedelta(seconds=i)).id for i in range(5)]
    seen, token = [], None
    while True:
        params = {"page_size": 2, **({"page_token": token} if token else {})}
        page = client.get("/v1/jobs", headers=auth, params=params).json()
        seen += [j["id"] for j in page["items"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == list(reversed(ids))
