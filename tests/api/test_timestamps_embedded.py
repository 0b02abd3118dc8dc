"""Embedded mode (SQLite) answers timestamps exactly as production (PostgreSQL) does: UTC with
an offset (``...Z``). SQLite keeps no offset, so before the fix it answered naive times."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from api.app import create_app
from drtrain.jobs.spec import JobSpec, spec_to_dict
from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.kit.migrate import upgrade
from drtrain.kit.models import Job, JobStatus
from drtrain.kit.settings import Settings
from drtrain.tenants.keys import create_key
from drtrain.tenants.repository import tenant_by_name
from tests.factories import small_spec

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], object]]:
    settings = Settings(data_dir=tmp_path, database_url="", broker_url="", storage_url="",
                        environment="embedded")
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as s:
        key = create_key(s, "local")
    try:
        with TestClient(create_app(settings, engine=engine)) as client:
            yield client, {"Authorization": f"Bearer {key}"}, factory
    finally:
        engine.dispose()


def _add(session: Session, **kw: object) -> Job:
    tenant = tenant_by_name(session, "local")
    assert tenant is not None
    spec = spec_to_dict(JobSpec.model_validate(small_spec("builtin:digits")))
    job = Job(tenant_id=tenant.id, dataset_id="builtin:digits", spec=spec, **kw)
    session.add(job)
    session.flush()
    return job


def test_sqlite_timestamps_carry_the_utc_offset(embedded) -> None:  # noqa: ANN001
    client, auth, factory = embedded
    with session_scope(factory) as s:
        job = _add(s, status=JobStatus.succeeded,
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
        ids = [_add(s, created_at=base + timedelta(seconds=i)).id for i in range(5)]
    seen, token = [], None
    while True:
        params = {"page_size": 2, **({"page_token": token} if token else {})}
        page = client.get("/v1/jobs", headers=auth, params=params).json()
        seen += [j["id"] for j in page["items"]]
        token = page["next_page_token"]
        if not token:
            break
    assert seen == list(reversed(ids))
