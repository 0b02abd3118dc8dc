"""Cheap reads: plain-column rows serialised once, list rows without the
spec, ETag/304 on lists and metrics pages, and the key -> tenant cache with its TTL."""
from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy.orm import sessionmaker

from api import reads
from api.schemas.jobs import JobOut, JobSummaryOut, MetricPointOut
from drtrain.jobs import views
from drtrain.kit.db import raw_reader
from drtrain.kit.models import JobStatus
from drtrain.kit.raw_sql import utc_texts
from drtrain.tenants.keys import KeyCache, TenantRef, create_key, revoke_key
from tests.factories import add_job, add_points, tenant_id


def test_row_types_dump_exactly_as_the_documented_models(db, auth_a) -> None:  # noqa: ANN001
    """A field added to a response model is selected and serialised by the read path too."""
    job = add_job(db, tenant_id(db), JobStatus.running, progress=0.25,
                  result={"metrics": {"test_accuracy": 0.9}})
    with raw_reader(sessionmaker(bind=db.connection())) as raw:
        row = views.job(raw, job.tenant_id, job.id, reads.JOB_NAMES)
    assert row is not None and list(row) == list(JobOut.model_fields)
    assert reads.job_body(row) == JobOut.model_validate(job).model_dump_json().encode()
    assert reads.job_body(job) == reads.job_body(row)  # an ORM job (a write's answer) alike
    assert reads.JOB_SUMMARY_NAMES == tuple(JobSummaryOut.model_fields)
    assert views.METRIC_NAMES == tuple(MetricPointOut.model_fields)
    point = {"seq": 1, "phase": "pretrain", "layer": None, "epoch": 0, "name": "x", "value": 0.5,
             "at": datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)}
    columns = [[point[k]] for k in views.METRIC_NAMES]
    columns[-1] = utc_texts(columns[-1])
    assert reads.point_jsons(columns) == [MetricPointOut(**point).model_dump_json().encode()]


def test_list_rows_leave_out_the_spec_unless_asked(client, db, auth_a) -> None:  # noqa: ANN001
    add_job(db, tenant_id(db), JobStatus.queued)
    rows = client.get("/v1/jobs", headers=auth_a).json()["items"]
    assert len(rows) == 1 and "spec" not in rows[0]
    assert set(rows[0]) == set(JobSummaryOut.model_fields)
    full = client.get("/v1/jobs", params={"include": "spec"}, headers=auth_a).json()["items"]
    assert full[0]["spec"]["model"]["hidden_layers"] == [8, 4]
    assert client.get("/v1/jobs", params={"include": "other"}, headers=auth_a).status_code == 422


def test_job_list_has_an_etag_and_answers_304(client, db, auth_a) -> None:  # noqa: ANN001
    owner = tenant_id(db)
    job = add_job(db, owner, JobStatus.running)
    first = client.get("/v1/jobs", headers=auth_a)
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    cached = client.get("/v1/jobs", headers={**auth_a, "If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
    job.progress = 0.5
    db.commit()
    changed = client.get("/v1/jobs", headers={**auth_a, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


def test_metrics_page_has_an_etag_and_answers_304(client, db, auth_a) -> None:  # noqa: ANN001
    job = add_job(db, tenant_id(db), JobStatus.running)
    add_points(db, job, 3)
    url = f"/v1/jobs/{job.id}/metrics"
    first = client.get(url, headers=auth_a)
    assert [p["seq"] for p in first.json()["items"]] == [1, 2, 3]
    etag = first.headers["etag"]
    assert client.get(url, headers={**auth_a, "If-None-Match": etag}).status_code == 304
    add_points(db, job, 1, start=4)
    again = client.get(url, headers={**auth_a, "If-None-Match": etag})
    assert again.status_code == 200 and again.json()["next_since"] == 4


def test_key_cache_expires_and_is_bounded() -> None:
    now = [0.0]
    cache = KeyCache(ttl=5, max_entries=2, clock=lambda: now[0])
    ref = TenantRef("t1", "one", datetime(2026, 1, 1, tzinfo=UTC))
    cache.put("drt_a", ref)
    assert cache.get("drt_a") == ref
    now[0] = 4.9
    assert cache.get("drt_a") == ref
    now[0] = 5.0
    assert cache.get("drt_a") is None  # expired: the next request asks the database
    cache.put("drt_a", ref)
    cache.put("drt_b", ref)
    cache.put("drt_c", ref)  # beyond two entries the least recently used goes
    assert cache.get("drt_a") is None and cache.get("drt_c") == ref
    assert KeyCache(ttl=0).get("drt_a") is None


def test_a_revoked_key_stops_working_within_the_cache_ttl(app, client, db) -> None:  # noqa: ANN001
    app.state.key_cache = KeyCache(ttl=0.5)
    key = create_key(db, "revoked")
    db.commit()
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    assert revoke_key(db, key) == 1
    db.commit()
    # Still cached: answered without a query for up to the TTL...
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    time.sleep(0.6)
    # ...and refused after it.
    resp = client.get("/v1/jobs", headers=headers)
    assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"


def test_without_the_cache_a_revoked_key_fails_at_once(app, client, db) -> None:  # noqa: ANN001
    app.state.key_cache = KeyCache(ttl=0)
    key = create_key(db, "revoked-now")
    db.commit()
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    revoke_key(db, key)
    db.commit()
    assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_concurrent_cache_misses_share_one_key_lookup(monkeypatch) -> None:  # noqa: ANN001
    import asyncio
    from types import SimpleNamespace

    from api import deps

    calls: list[str] = []
    release = asyncio.Event()
    ref = TenantRef(id="t" * 32, name="crowd", created_at=datetime.now(UTC))

    class SlowDatabase:
        def __init__(self, _factory: object) -> None:
            pass

        async def read(self, _query: object, key: str) -> TenantRef:
            calls.append(key)
            await release.wait()
            return ref

    monkeypatch.setattr(deps, "Database", SlowDatabase)
    state = SimpleNamespace(key_lookups={}, sessionmaker=None)

    async def crowd() -> None:
        waiters = [asyncio.ensure_future(deps.look_up_key(state, "drt_k")) for _ in range(50)]
        await asyncio.sleep(0.01)
        waiters[0].cancel()  # one client goes away: the others still get their answer
        release.set()
        answers = await asyncio.gather(*waiters[1:])
        assert answers == [ref] * 49 and calls == ["drt_k"]
        await asyncio.sleep(0)
        assert state.key_lookups == {}  # done: the next miss queries again
        assert await deps.look_up_key(state, "drt_k") == ref and len(calls) == 2

    asyncio.run(crowd())
