"""The fast lane of the hottest reads (api/fast_reads.py): it answers exactly what the
routes answer (bytes, ETag, 304), and leaves everything else to them (errors, unknown or
revoked keys, page tokens, odd parameters)."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic_core import to_json

from api import reads
from api.fast_reads import FastReads
from api.http import weak_etag
from api.job_cache import FullPages
from api.schemas.jobs import JobOut, JobSummaryOut, MetricPointOut, MetricsPage
from drtrain.jobs.views import METRIC_NAMES
from drtrain.kit import raw_sql as raw_reads
from drtrain.kit.db import json_loads, session_scope
from drtrain.kit.models import Job, JobStatus, MetricPoint
from drtrain.tenants.keys import KeyCache, revoke_key
from tests.factories import add_job, add_local_job, add_points, tenant_id


def lane(app) -> FastReads:  # noqa: ANN001
    layer = app.middleware_stack
    while not isinstance(layer, FastReads):
        layer = layer.app
    return layer


class Counting:
    """Counts the requests the lane answered itself."""

    def __init__(self, app, monkeypatch) -> None:  # noqa: ANN001
        self.count = 0
        fast = lane(app)
        answer = fast._answer

        async def counted(*args):  # noqa: ANN002, ANN202
            done = await answer(*args)
            self.count += done
            return done

        monkeypatch.setattr(fast, "_answer", counted)


@pytest.fixture
def counting(client, app, auth_a, monkeypatch) -> Counting:  # noqa: ANN001
    # Builds the middleware stack; the route puts the key in the cache (the lane never does).
    client.get("/v1/jobs", headers=auth_a)
    return Counting(app, monkeypatch)


def test_the_lane_answers_what_the_models_would(client, db, auth_a, counting) -> None:  # noqa: ANN001
    owner = tenant_id(db)
    job = add_job(db, owner, JobStatus.running, progress=0.25, tags=None, warnings=["tiny"],
                  result={"metrics": {"test_accuracy": 0.9}},
                  started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))))
    add_job(db, owner, JobStatus.queued, tags=["a"])
    add_points(db, job, 3)
    db.refresh(job)
    one = client.get(f"/v1/jobs/{job.id}", headers=auth_a)
    assert one.content == JobOut.model_validate(job).model_dump_json().encode()
    assert one.json()["started_at"] == "2026-01-02T01:04:05Z"
    assert one.headers["etag"] == weak_etag(one.content)
    listed = client.get("/v1/jobs", headers=auth_a)
    jobs = sorted(db.query(Job).filter_by(tenant_id=owner), key=lambda j: (j.created_at, j.id),
                  reverse=True)
    expected = [JobSummaryOut.model_validate(j).model_dump(mode="json") for j in jobs]
    assert listed.json() == {"items": expected, "next_page_token": None}
    with_spec = client.get("/v1/jobs", params={"include": "spec"}, headers=auth_a).json()
    assert with_spec["items"][1]["spec"] == job.spec
    queued = client.get("/v1/jobs", params={"status": "queued", "page_size": "1"},
                        headers=auth_a).json()
    assert [j["status"] for j in queued["items"]] == ["queued"]
    assert queued["next_page_token"] is None
    points = db.query(MetricPoint).filter_by(job_id=job.id).order_by(MetricPoint.seq).all()
    page = client.get(f"/v1/jobs/{job.id}/metrics", headers=auth_a)
    assert page.content == MetricsPage(items=[MetricPointOut.model_validate(p) for p in points],
                                       next_since=3).model_dump_json().encode()
    assert counting.count == 5


def test_the_lane_answers_304_and_its_etags_are_the_routes(client, db, auth_a, counting) -> None:  # noqa: ANN001
    job = add_job(db, tenant_id(db), JobStatus.running)
    add_points(db, job, 2)
    for url in (f"/v1/jobs/{job.id}", "/v1/jobs", f"/v1/jobs/{job.id}/metrics"):
        etag = client.get(url, headers=auth_a).headers["etag"]
        again = client.get(url, headers={**auth_a, "If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert counting.count == 6
    # A repeated parameter goes to the route: same bytes, same ETag.
    route = client.get("/v1/jobs", params=[("page_size", "5"), ("page_size", "5")],
                       headers=auth_a)
    assert counting.count == 6
    assert route.content == client.get("/v1/jobs", params={"page_size": "5"},
                                       headers=auth_a).content


def test_everything_else_goes_to_the_routes(client, db, auth_a, counting) -> None:  # noqa: ANN001
    owner = tenant_id(db)
    job = add_job(db, owner, JobStatus.running)
    add_job(db, owner, JobStatus.queued)
    assert client.get(f"/v1/jobs/{job.id}").status_code == 401
    assert client.get(f"/v1/jobs/{job.id}", headers={"Authorization": "Bearer drt_nope"}
                      ).status_code == 401
    assert client.get("/v1/jobs/no-such-job", headers=auth_a).status_code == 404
    assert client.get("/v1/jobs/no-such-job/metrics", headers=auth_a
                      ).headers["content-type"] == "application/problem+json"
    for params in ({"page_size": "0"}, {"page_size": "201"}, {"page_size": "x"},
                   {"status": "nope"}, {"include": "other"}, {"tag": "-bad"}):
        assert client.get("/v1/jobs", params=params, headers=auth_a).status_code == 422, params
    assert client.get(f"/v1/jobs/{job.id}/metrics", params={"limit": "0"},
                      headers=auth_a).status_code == 422
    assert counting.count == 0
    first = client.get("/v1/jobs", params={"page_size": "1"}, headers=auth_a).json()
    second = client.get("/v1/jobs", params={"page_size": "1", "page_token":
                                            first["next_page_token"]}, headers=auth_a).json()
    assert counting.count == 2  # a page token's page too
    assert {first["items"][0]["id"], second["items"][0]["id"]} == {
        j.id for j in db.query(Job).filter_by(tenant_id=owner)}
    # The route's token (a repeated parameter goes to the route) and the lane's are the same.
    route_first = client.get("/v1/jobs", params=[("page_size", "1"), ("page_size", "1")],
                             headers=auth_a).json()
    assert route_first == first and counting.count == 2


def test_a_revoked_key_is_refused_once_its_cache_entry_expires(client, app, db, tenant_a_key,
                                                                auth_a, counting) -> None:  # noqa: ANN001
    now = [0.0]
    app.state.key_cache = KeyCache(ttl=5, clock=lambda: now[0])
    job = add_job(db, tenant_id(db), JobStatus.running)
    # Not cached yet: the lane looks the key up as the route would, and caches it.
    assert client.get(f"/v1/jobs/{job.id}", headers=auth_a).status_code == 200
    assert counting.count == 1 and app.state.key_cache.get(auth_a["Authorization"][7:])
    assert revoke_key(db, tenant_a_key) == 1
    db.commit()
    now[0] = 4.0
    assert client.get(f"/v1/jobs/{job.id}", headers=auth_a).status_code == 200
    assert counting.count == 2  # within the TTL the cache answers, as it did before the lane
    now[0] = 5.0
    refused = client.get(f"/v1/jobs/{job.id}", headers=auth_a)
    assert refused.status_code == 401 and counting.count == 2  # the lookup: the route's 401


def test_only_full_metrics_pages_are_kept(client, app, db, auth_a, counting) -> None:  # noqa: ANN001
    job = add_job(db, tenant_id(db), JobStatus.running)
    add_points(db, job, 3)
    url = f"/v1/jobs/{job.id}/metrics"
    full = client.get(url, params={"limit": 2}, headers=auth_a).content
    partial = client.get(url, params={"since": 2}, headers=auth_a).json()
    assert [p["seq"] for p in partial["items"]] == [3]
    pages: FullPages = app.state.job_reads.full_pages
    assert pages.get((job.id, 0, 2)) is not None and pages.get((job.id, 2, 1000)) is None
    add_points(db, job, 2, start=4)
    grown = client.get(url, params={"since": 2}, headers=auth_a).json()
    assert [p["seq"] for p in grown["items"]] == [3, 4, 5]
    assert client.get(url, params={"limit": 2}, headers=auth_a).content == full
    db.delete(job)
    db.commit()
    assert client.get(url, params={"limit": 2}, headers=auth_a).status_code == 404


def test_full_pages_are_bounded_by_bytes() -> None:
    pages = FullPages(max_bytes=400)
    for i in range(5):
        pages.put((str(i), 0, 1), (b"x" * 100, "tag"))
    assert pages.get(("0", 0, 1)) is None and pages.get(("4", 0, 1)) is not None
    pages.put(("big", 0, 1), (b"x" * 101, "tag"))  # over a quarter of the budget: not kept
    assert pages.get(("big", 0, 1)) is None


def test_metric_columns_dump_as_the_model_would() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    odd = [1e-5, 1e16, -0.0, float("inf"), float("nan"), 0.1, 3, 1.2345678901234568e20]
    names = ['a"b', "é,x", "x\ny", "\x01", "plain"]
    points = [{"seq": i + 1, "phase": "pretrain" if i % 2 else "fine,tune",
               "layer": None if i % 3 else i, "epoch": i, "name": names[i % len(names)],
               "value": v, "at": at + timedelta(microseconds=-678 if i == 2 else i)}
              for i, v in enumerate(odd)]
    columns = [[p[k] for p in points] for k in METRIC_NAMES]
    columns[-1] = raw_reads.utc_texts(columns[-1])
    body = reads.metrics_page_body(columns, 0)
    expected = MetricsPage(items=[MetricPointOut(**p) for p in points],
                           next_since=len(points)).model_dump_json().encode()
    assert body == expected
    assert reads.metrics_page_body([[] for _ in METRIC_NAMES], 7) == \
        b'{"items":[],"next_since":7}'


def test_stored_timestamps_become_utc() -> None:
    # SQLite's text (UTC, no offset), bulk and one by one, with and without microseconds.
    stored = ["2026-01-02 03:04:05.678000", "2026-01-02 03:04:05.000000"]
    assert raw_reads.utc_texts(stored) == ["2026-01-02T03:04:05.678000Z", "2026-01-02T03:04:05Z"]
    assert raw_reads.utc_texts(stored[:1] + ["2026-01-02 03:04:05"]) == [
        "2026-01-02T03:04:05.678000Z", "2026-01-02T03:04:05Z"]
    parsed = raw_reads.utc_datetimes(stored)
    assert parsed[0] == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert all(p is not None and p.utcoffset() == timedelta(0) for p in parsed)
    assert raw_reads.utc_datetimes([None, "2026-01-02 03:04:05"])[1] == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    # PostgreSQL's aware values in the session's zone.
    paris = datetime(2026, 1, 2, 4, 4, 5, tzinfo=ZoneInfo("Europe/Paris"))
    assert raw_reads.utc_texts([paris]) == ["2026-01-02T03:04:05Z"]
    assert raw_reads.utc_datetime(paris) == paris and raw_reads.utc_datetime(
        paris).tzinfo is UTC  # type: ignore[union-attr]
    # PostgreSQL's own UTC zone is kept as it is: written with "Z" all the same.
    etc_utc = datetime(2026, 1, 2, 3, 4, 5, tzinfo=ZoneInfo("Etc/UTC"))
    assert raw_reads.utc_datetime(etc_utc) is etc_utc
    assert to_json(etc_utc) == to_json(etc_utc.astimezone(UTC)) == b'"2026-01-02T03:04:05Z"'
    column = [etc_utc, etc_utc.replace(microsecond=5), etc_utc.astimezone(UTC)]
    assert raw_reads.utc_texts(column) == [to_json(v).decode().strip('"') for v in column] == [
        "2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000005Z", "2026-01-02T03:04:05Z"]


def test_json_columns_read_as_json_loads_would() -> None:
    texts = ['{"a": [1, 2.5e-3, NaN, Infinity], "b": {"c": null}, "a2": 123456789012345678901}',
             '{"k": 1, "k": 2}', '"\\ud800 lone"', "[]", "null"]
    for text in texts:
        expected = json.loads(text)
        got = json_loads(text)
        assert repr(got) == repr(expected), text
        assert repr(json_loads(text.encode())) == repr(expected)
    assert repr(raw_reads.json_values([*texts, None])) == repr([*map(json.loads, texts), None])


def test_list_rows_dump_as_the_models_would(db, tenant_a_key) -> None:  # noqa: ANN001
    job = add_job(db, tenant_id(db), JobStatus.queued, tags=None, warnings=None, name="n")
    db.refresh(job)
    for with_spec, model in ((False, JobSummaryOut), (True, JobOut)):
        names = reads.JOB_NAMES if with_spec else reads.JOB_SUMMARY_NAMES
        row = {name: getattr(job, name) for name in names}
        body = reads.page_body([row], None, with_spec)
        item = model.model_validate(job).model_dump_json().encode()
        assert body == b'{"items":[' + item + b'],"next_page_token":null}'


def test_the_lane_reads_a_sqlite_file_in_place(embedded, monkeypatch) -> None:  # noqa: ANN001
    """Embedded mode: read with no thread hop, same bytes as the models, timestamps in UTC."""
    client, auth, factory = embedded
    with session_scope(factory) as s:
        job = add_local_job(s, status=JobStatus.running, tags=["x"],
                   started_at=datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2))))
        s.add_all(MetricPoint(job_id=job.id, seq=i, attempt=1, phase="pretrain", layer=0,
                              layer_key=0, epoch=i, name="loss", value=1 / i,
                              at=datetime(2024, 5, 6, 7, 8, 9, i % 2, tzinfo=UTC))
                  for i in range(1, 4))
    client.get("/v1/jobs", headers=auth)  # the key into the cache
    counting = Counting(client.app, monkeypatch)

    def no_thread(*_args: object, **_kw: object) -> None:
        raise AssertionError("a SQLite file is read in place")

    monkeypatch.setattr("anyio.to_thread.run_sync", no_thread)
    one = client.get(f"/v1/jobs/{job.id}", headers=auth).json()
    assert one["started_at"] == "2024-05-06T05:08:09Z" and one["created_at"].endswith("Z")
    assert client.get("/v1/jobs", headers=auth).json()["items"][0]["created_at"] == \
        one["created_at"]
    page = client.get(f"/v1/jobs/{job.id}/metrics", headers=auth).content
    with factory() as s:
        stored = s.get(Job, job.id)
        points = s.query(MetricPoint).filter_by(job_id=job.id).order_by(MetricPoint.seq).all()
        assert one == JobOut.model_validate(stored).model_dump(mode="json")
        assert page == MetricsPage(items=[MetricPointOut.model_validate(p) for p in points],
                                   next_since=3).model_dump_json().encode()
    assert b'"at":"2024-05-06T07:08:09Z"' in page and b'"at":"2024-05-06T07:08:09.000001Z"' in page
    assert counting.count == 3


def test_a_crowd_with_a_key_not_yet_cached_is_answered_by_the_lane_after_one_lookup(
        embedded, monkeypatch) -> None:  # noqa: ANN001
    """After a quiet spell the key's entry has expired: the crowd arriving at once shares one
    lookup and stays in the lane (it used to take the route's slower path, all of it)."""
    import asyncio

    import httpx

    from api import deps
    from drtrain.tenants import keys as tenant_keys

    client, auth, factory = embedded
    with session_scope(factory) as s:
        job = add_local_job(s, status=JobStatus.running)
    client.get("/v1/datasets", headers=auth)  # builds the middleware stack
    app = client.app
    app.state.key_cache = KeyCache(ttl=5)  # empty: the key is not cached
    counting = Counting(app, monkeypatch)
    lookups: list[str] = []
    real = tenant_keys.tenant_ref_for_key

    def counted(session: object, key: str) -> object:
        lookups.append(key)
        return real(session, key)  # type: ignore[arg-type]

    monkeypatch.setattr(deps, "tenant_ref_for_key", counted)

    async def crowd() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            return await asyncio.gather(*(c.get(f"/v1/jobs/{job.id}", headers=auth)
                                          for _ in range(30)))

    answers = asyncio.run(crowd())
    assert {r.status_code for r in answers} == {200}
    assert len({r.content for r in answers}) == 1
    assert counting.count == 30 and len(lookups) == 1
    # An unknown key is still the route's: its 401, its failed-auth count.
    assert client.get(f"/v1/jobs/{job.id}", headers={"Authorization": "Bearer drt_nope"}
                      ).status_code == 401
    assert counting.count == 30
