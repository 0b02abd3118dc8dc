"""Job and job-list bodies answered from memory until the tenant's jobs change (api/job_cache.py,
drtrain/kit/job_changes.py): never a change hidden, on SQLite (data_version) and on
PostgreSQL (the trigger's NOTIFY, plus this process's own commits at once)."""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text, update
from sqlalchemy.orm import Session

from api.app import create_app
from api.fast_reads import FastReads
from api.job_cache import JobBodies
from drtrain.jobs import views
from drtrain.jobs.spec import JobSpec, spec_to_dict
from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.kit.job_changes import (
    APPLICATION_NAME,
    NoChanges,
    PostgresChanges,
    SqliteChanges,
    job_changes_for,
)
from drtrain.kit.migrate import upgrade
from drtrain.kit.models import Base, Job, JobStatus
from drtrain.kit.settings import Settings
from drtrain.tenants.keys import create_key
from drtrain.tenants.repository import tenant_by_name
from tests.factories import small_spec
from tests.pg import fresh_database

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


# ------------------------------------------------------------------ the cache itself

def test_a_body_is_served_only_under_the_version_it_was_read_at() -> None:
    cache = JobBodies()
    cache.put("k", 1, (b"{}", "e"))
    assert cache.get("k", 1) == (b"{}", "e")
    assert cache.get("k", 2) is None
    assert cache.get("other", 1) is None


def test_bodies_expire_and_are_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("api.job_cache.time.monotonic", lambda: now[0])
    cache = JobBodies(max_bytes=800, max_age=5)
    cache.put("a", 1, (b"x" * 100, "e"))
    now[0] += 5.5
    assert cache.get("a", 1) is None  # older than max_age
    for i in range(20):
        cache.put(i, 1, (b"x" * 100, "e"))
    assert len(cache) == 8 and cache.get(0, 1) is None and cache.get(19, 1) is not None
    cache.put("huge", 1, (b"x" * 200, "e"))  # over an eighth of the bound: never kept
    assert cache.get("huge", 1) is None


# ------------------------------------------------------------------ helpers

class Reads:
    """Counts the database reads of jobs (what a cached answer skips)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in ("job", "job_page"):
            real = getattr(views, name)
            monkeypatch.setattr(views, name, self._counted(real))

    def _counted(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kw: Any) -> Any:
            self.count += 1
            return real(*args, **kw)
        return counted


def _add_job(factory: Any, tenant: str) -> str:
    spec = spec_to_dict(JobSpec.model_validate(small_spec("builtin:digits")))
    with session_scope(factory) as s:
        tenant_id = tenant_by_name(s, tenant).id  # type: ignore[union-attr]
        job = Job(tenant_id=tenant_id, dataset_id="builtin:digits", spec=spec,
                  status=JobStatus.queued)
        s.add(job)
        s.flush()
        return job.id


def _set_status(engine: Any, job_id: str, status: JobStatus) -> None:
    """A change made as a worker would: another process's connection, committed."""
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(status=status.value))


def _lane(app: Any) -> FastReads:
    layer = app.middleware_stack
    while not isinstance(layer, FastReads):
        layer = layer.app
    return layer


# ------------------------------------------------------------------ SQLite

@pytest.fixture
def embedded_app(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Any, Any]]:
    settings = Settings(data_dir=tmp_path, database_url="", broker_url="", storage_url="",
                        environment="embedded")
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    with session_scope(make_sessionmaker(engine)) as s:
        key = create_key(s, "local")
    app = create_app(settings)  # its own engine, as `drtrain up` runs it
    try:
        with TestClient(app) as client:
            yield client, {"Authorization": f"Bearer {key}"}, engine, app
    finally:
        engine.dispose()


def test_sqlite_reads_are_cached_until_any_commit(embedded_app, monkeypatch) -> None:  # noqa: ANN001
    client, auth, engine, app = embedded_app
    assert isinstance(app.state.job_changes, SqliteChanges)
    job_id = _add_job(make_sessionmaker(engine), "local")
    client.get("/v1/datasets", headers=auth)  # the key cached, no job read cached
    reads = Reads(monkeypatch)
    first = client.get(f"/v1/jobs/{job_id}", headers=auth)
    again = client.get(f"/v1/jobs/{job_id}", headers=auth)
    listed = [client.get("/v1/jobs", headers=auth) for _ in range(3)]
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert reads.count == 2  # one job read, one page read; the rest from memory
    assert len({r.content for r in listed}) == 1

    _set_status(engine, job_id, JobStatus.running)  # another connection commits
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "running"
    second = _add_job(make_sessionmaker(engine), "local")
    assert [j["id"] for j in client.get("/v1/jobs", headers=auth).json()["items"]][0] == second
    assert reads.count == 4


def test_sqlite_api_writes_are_seen_by_the_next_read(embedded_app) -> None:  # noqa: ANN001
    client, auth, engine, _app = embedded_app
    job_id = _add_job(make_sessionmaker(engine), "local")
    client.get("/v1/jobs", headers=auth)
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "queued"
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 202
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "cancelled"
    listed = client.get("/v1/jobs", headers=auth).json()["items"]
    assert listed[0]["status"] == "cancelled"


def test_the_cache_can_be_turned_off(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="", broker_url="", storage_url="",
                        environment="embedded", job_cache_seconds=0)
    upgrade(settings.resolved_database_url)
    app = create_app(settings)
    with TestClient(app):
        assert isinstance(app.state.job_changes, NoChanges)


def test_nothing_is_cached_for_an_in_memory_or_connection_bound_database() -> None:
    memory = create_engine("sqlite://")
    try:
        assert isinstance(job_changes_for(memory), NoChanges)
        with memory.connect() as conn:
            assert isinstance(job_changes_for(conn), NoChanges)
    finally:
        memory.dispose()


# ------------------------------------------------------------------ PostgreSQL

@pytest.fixture
def pg_app(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Any, Any]]:
    with fresh_database("jobcache") as url:
        settings = Settings(data_dir=tmp_path / "data", database_url=url,
                            storage_url=(tmp_path / "objects").as_uri(), environment="test",
                            broker_url="filesystem://",
                            fashion_mnist_dir=tmp_path / "no-fashion-mnist")
        engine = make_engine(url)
        with session_scope(make_sessionmaker(engine)) as s:
            key = create_key(s, "tenant-a")
        app = create_app(settings)
        try:
            with TestClient(app) as client:
                changes = app.state.job_changes
                assert isinstance(changes, PostgresChanges)
                assert changes.wait_listening(10)
                yield client, {"Authorization": f"Bearer {key}"}, engine, app
        finally:
            engine.dispose()


def _eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return check()


def test_postgres_reads_are_cached_until_a_change_is_notified(pg_app, monkeypatch) -> None:  # noqa: ANN001
    client, auth, engine, _app = pg_app
    job_id = _add_job(make_sessionmaker(engine), "tenant-a")
    assert _eventually(lambda: client.get("/v1/jobs", headers=auth).json()["items"] != [])
    reads = Reads(monkeypatch)
    for _ in range(3):
        assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "queued"
        client.get("/v1/jobs", headers=auth)
    assert reads.count <= 2

    _set_status(engine, job_id, JobStatus.running)  # a worker's commit
    assert _eventually(lambda: client.get(f"/v1/jobs/{job_id}", headers=auth
                                          ).json()["status"] == "running")
    assert _eventually(lambda: client.get("/v1/jobs", headers=auth
                                          ).json()["items"][0]["status"] == "running")


def test_postgres_api_writes_are_seen_at_once_without_the_notice(pg_app) -> None:  # noqa: ANN001
    client, auth, engine, app = pg_app
    changes: PostgresChanges = app.state.job_changes
    job_id = _add_job(make_sessionmaker(engine), "tenant-a")
    other = _add_job(make_sessionmaker(engine), "tenant-a")
    assert _eventually(lambda: len(client.get("/v1/jobs", headers=auth).json()["items"]) == 2)
    # Notices stop counting from here (the listener keeps adding to the dict it holds):
    # only this process's own commits move the version.
    changes._counts = dict(changes._counts)
    for jid in (job_id, other):
        assert client.get(f"/v1/jobs/{jid}", headers=auth).json()["status"] == "queued"
    # Control: a change committed elsewhere is not seen while its notice is withheld, so
    # the reads below are answered from the cache when they can be.
    _set_status(engine, other, JobStatus.running)
    assert client.get(f"/v1/jobs/{other}", headers=auth).json()["status"] == "queued"

    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 202
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{other}", headers=auth).json()["status"] == "running"


def test_postgres_no_cache_reads_see_another_replicas_write_before_its_notice(pg_app) -> None:  # noqa: ANN001
    """Another API process's cancel is committed but its notice has not arrived: a read with
    ``Cache-Control: no-cache`` (or ``max-age=0``) goes to the database and sees it."""
    client, auth, engine, app = pg_app
    changes: PostgresChanges = app.state.job_changes
    job_id = _add_job(make_sessionmaker(engine), "tenant-a")
    assert _eventually(lambda: client.get("/v1/jobs", headers=auth).json()["items"] != [])
    changes._counts = dict(changes._counts)  # notices withheld from here
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "queued"
    _set_status(engine, job_id, JobStatus.cancelled)  # committed by "another replica"
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "queued"  # control
    for directive in ("no-cache", "max-age=0", "private, No-Cache"):
        fresh = {**auth, "Cache-Control": directive}
        assert client.get(f"/v1/jobs/{job_id}", headers=fresh).json()["status"] == "cancelled"
        assert client.get("/v1/jobs", headers=fresh).json()["items"][0]["status"] == "cancelled"
    # The body read fresh replaced the stale one: later plain reads show the cancel too.
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "cancelled"


def test_postgres_listener_reconnects_and_never_serves_across_the_gap(pg_app) -> None:  # noqa: ANN001
    client, auth, engine, app = pg_app
    changes: PostgresChanges = app.state.job_changes
    before = changes.version("anyone")
    with engine.connect() as conn:
        killed = conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :db AND application_name = :name"),
            {"db": engine.url.database, "name": APPLICATION_NAME}).all()
    assert killed
    assert _eventually(lambda: changes.version("anyone") not in (None, before), 15)
    assert changes.version("anyone")[0] > before[0]  # a new epoch: older bodies never served
    assert client.get("/v1/jobs", headers=auth).status_code == 200


def test_postgres_without_the_trigger_caches_nothing(tmp_path: Path) -> None:
    with fresh_database("notrigger", migrate=False) as url:
        engine = make_engine(url)
        Base.metadata.create_all(engine)  # the tables, but not migration 0006's trigger
        changes = PostgresChanges(engine)
        try:
            assert not changes.wait_listening(1.5)
            assert changes.version("anyone") is None
        finally:
            changes.close()
            engine.dispose()


def test_the_trigger_notifies_the_tenant_of_each_committed_change(pg_app) -> None:  # noqa: ANN001
    _client, _auth, engine, _app = pg_app
    import psycopg

    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    with psycopg.connect(*cargs, **cparams, autocommit=True) as listener:
        listener.execute("LISTEN drtrain_jobs")
        job_id = _add_job(make_sessionmaker(engine), "tenant-a")
        with Session(engine) as s, s.begin():
            s.execute(update(Job).where(Job.id == job_id).values(progress=0.5))
            s.rollback()  # never committed: never notified
        _set_status(engine, job_id, JobStatus.running)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": job_id})
        notes = [n.payload for n in listener.notifies(timeout=1.0, stop_after=10)]
    with Session(engine) as s:
        tenant = tenant_by_name(s, "tenant-a")
    assert tenant is not None
    assert notes == [tenant.id] * 3  # the insert, the update, the delete; not the rollback


def test_postgres_listener_listens_at_the_direct_url_behind_a_pooler() -> None:
    """Behind PgBouncer in transaction mode the pooled URL cannot LISTEN: the listener goes
    to DRTRAIN_DATABASE_LISTEN_URL. Here the engine's URL leads nowhere, the direct one works."""
    with fresh_database("listenurl") as url:
        engine = make_engine(make_url(url).set(port=1).render_as_string(hide_password=False))
        changes = PostgresChanges(engine, listen_url=url)
        try:
            assert changes.wait_listening(10)
        finally:
            changes.close()
            engine.dispose()
