"""What keeps one tenant's slow or many connections from holding the API's resources:
body timeouts, per-tenant upload slots, the pool and thread
limiter sized together, and a submit lock that blocks nothing but other submits."""
from __future__ import annotations

import time
import uuid

import anyio
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api import problems
from api.app import create_app
from api.limits import BodyTimeoutMiddleware, TenantSlots
from drtrain.kit.db import make_engine
from drtrain.kit.models import Tenant
from drtrain.kit.settings import Settings
from drtrain.tenants.repository import lock_tenant
from tests.factories import tenant_id

pytestmark = pytest.mark.timeout(60)


def _app(idle: float, total: float = 60.0) -> FastAPI:
    app = FastAPI()
    problems.install(app)
    app.add_middleware(BodyTimeoutMiddleware, idle_seconds=idle, total_seconds=total)

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/slow-stream")
    async def slow_stream() -> StreamingResponse:
        async def chunks():  # noqa: ANN202
            for _ in range(3):
                await anyio.sleep(0.1)
                yield b"x"
        return StreamingResponse(chunks())

    return app


async def _call(app: FastAPI, method: str, path: str, messages: list[dict],
                stall: float = 5.0) -> tuple[int, bytes]:
    """Run one request through the ASGI app; after ``messages`` the client sends nothing
    for ``stall`` seconds (then disconnects)."""
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await anyio.sleep(stall)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": method, "scheme": "http", "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"test")], "client": ("127.0.0.1", 1),
             "server": ("test", 80)}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body


def test_a_stalled_body_is_dropped_with_408() -> None:
    app = _app(idle=0.2)
    started = time.monotonic()
    status, body = anyio.run(_call, app, "POST", "/echo",
                             [{"type": "http.request", "body": b"abc", "more_body": True}])
    assert status == 408 and b"stalled" in body
    assert time.monotonic() - started < 3  # not the client's 5 s stall


def test_a_body_that_keeps_coming_is_read_whole() -> None:
    chunks = [{"type": "http.request", "body": b"ab", "more_body": True},
              {"type": "http.request", "body": b"cd", "more_body": False}]
    assert anyio.run(_call, _app(idle=0.2), "POST", "/echo", chunks) == (200, b'{"bytes":4}')


def test_a_body_slower_than_the_total_limit_is_dropped() -> None:
    async def trickle(app: FastAPI) -> int:
        messages = [{"type": "http.request", "body": b"a", "more_body": True}] * 50

        sent: list[dict] = []

        async def receive() -> dict:
            await anyio.sleep(0.05)  # never idle for long, but never done either
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/echo", "raw_path": b"/echo",
                 "query_string": b"", "headers": [], "root_path": "", "scheme": "http",
                 "http_version": "1.1", "asgi": {"version": "3.0"}}
        await app(scope, receive, send)
        return next(m for m in sent if m["type"] == "http.response.start")["status"]

    assert anyio.run(trickle, _app(idle=1.0, total=0.3)) == 408


def test_waiting_for_a_disconnect_after_the_body_is_never_timed() -> None:
    """A streaming response listens for the disconnect for as long as it streams."""
    status, body = anyio.run(_call, _app(idle=0.05), "GET", "/slow-stream",
                             [{"type": "http.request", "body": b"", "more_body": False}])
    assert (status, body) == (200, b"xxx")


def test_uploads_beyond_the_tenants_limit_answer_429(app, client, db, auth_a) -> None:  # noqa: ANN001
    app.state.upload_slots = slots = TenantSlots(1, "uploads")
    owner = tenant_id(db)
    slots.acquire(owner)  # one upload of tenant A is in flight
    files = {"file": ("d.csv", b"a,label\n1,0\n2,1\n", "text/csv")}
    resp = client.post("/v1/datasets", headers=auth_a, files=files)
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) > 0
    assert "uploads" in resp.json()["detail"]
    slots.release(owner)
    assert client.post("/v1/datasets", headers=auth_a, files=files).status_code < 400
    assert slots.held(owner) == 0  # the finished upload gave its slot back


def test_pool_and_thread_limiter_are_sized_from_one_setting(tmp_path, pg_url) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    settings = Settings(data_dir=tmp_path, database_url=pg_url, environment="test",
                        storage_url=tmp_path.as_uri(), api_threads=7, db_pool_timeout_seconds=2)
    app = create_app(settings)
    pool = app.state.engine.pool
    assert pool.size() == 7 and pool._max_overflow == 7 and pool._timeout == 2
    with TestClient(app) as client:
        tokens = client.portal.call(
            lambda: anyio.to_thread.current_default_thread_limiter().total_tokens)
    assert tokens == 7


def test_the_submit_lock_blocks_other_submits_but_not_other_writes(pg_url) -> None:  # noqa: ANN001
    """The tenant's advisory lock serialises "count, then insert" only: another row that
    references the tenant (which FOR UPDATE on the tenant row would make wait) goes in."""
    engine = make_engine(pg_url)
    name = f"locks-{uuid.uuid4().hex[:8]}"
    try:
        with Session(engine) as s:
            tenant = Tenant(name=name)
            s.add(tenant)
            s.commit()
            owner = tenant.id
        with Session(engine) as holder, Session(engine) as other:
            lock_tenant(holder, owner)  # held until holder's transaction ends
            other.execute(text("SET lock_timeout = '2s'"))
            # A row that references the tenant (a key-share lock on its row).
            other.execute(text("INSERT INTO sweeps (id, tenant_id, base, grid, created_at) "
                               "VALUES (:id, :t, '{}', '{}', now())"),
                          {"id": uuid.uuid4().hex, "t": owner})
            other.commit()  # did not wait for the lock
            other.execute(text("SET lock_timeout = '300ms'"))
            with pytest.raises(OperationalError):
                lock_tenant(other, owner)  # another submit of the same tenant waits
            other.rollback()
            holder.rollback()
            lock_tenant(other, owner)  # and gets it once the first one ended
            other.rollback()
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM tenants WHERE name = :n"), {"n": name})
        engine.dispose()
