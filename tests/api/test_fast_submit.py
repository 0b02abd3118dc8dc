"""One path for every ``POST /v1/jobs``: ``Submits.submit`` (api/submits.py) hands the
submission to the app's group commit (drtrain/kit/group_commit.py), whose commit thread
settles every outcome in one place (``add_jobs`` in drtrain/jobs/submit_batch.py: an
Idempotency-Key replay, a dataset refusal, the storage quota, the active-job cap, a new job),
answers the batch, then publishes what it committed on a second thread.

The route calls it, and so does its shortcut before FastAPI's routing (api/fast_submit.py),
which answers plain submits, refusals included, with the very bytes the route answers, and
leaves the rest to the route (bodies that are not a valid JobSpec, other content types,
large bodies, unknown keys, Idempotency-Keys, addresses over their failed-auth budget).
Concurrent submits never pass the cap, a key is one job however its submits race, a batch's
failure is never another submission's, and messages go out only after the commit."""
from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from kombu.transport.redis import PublishBatch
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from api.app import create_app
from api.auth_limits import FailedAuthLimiter
from api.fast_submit import MAX_BODY_BYTES, FastSubmit, _read_body
from api.reads import job_response
from api.submits import Submits
from drtrain.jobs import repository as q
from drtrain.jobs import service, submit_batch
from drtrain.jobs.spec import JobSpec
from drtrain.jobs.submit_batch import Submission, commit_submissions
from drtrain.kit import broker
from drtrain.kit.broker_messages import job_id_of, job_ids_in_broker
from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.kit.errors import Conflict, Invalid, QuotaExhausted, TooManyJobs
from drtrain.kit.group_commit import GroupCommit
from drtrain.kit.migrate import upgrade
from drtrain.kit.models import ACTIVE_STATUSES, Job, JobStatus, Tenant
from drtrain.kit.publishing import publish_jobs
from drtrain.kit.settings import Settings
from drtrain.tenants import repository as tenants_repo
from drtrain.tenants.keys import create_key
from drtrain.tenants.repository import tenant_by_name
from tests.factories import add_dataset, add_job, small_spec, tenant_id


class Counting:
    """Counts the submits the lane answered itself, and keeps the errors it raised (for the
    app's 500)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self.raised: list[Exception] = []
        answer = FastSubmit._answer

        async def counted(lane, *args):  # noqa: ANN001, ANN002, ANN202
            try:
                replay = await answer(lane, *args)
            except Exception as exc:
                self.raised.append(exc)
                raise
            self.count += replay is None
            return replay

        monkeypatch.setattr(FastSubmit, "_answer", counted)


@pytest.fixture
def counting(client, auth_a, monkeypatch) -> Counting:  # noqa: ANN001
    client.get("/v1/jobs", headers=auth_a)  # the route puts the key in the cache
    return Counting(monkeypatch)


@pytest.fixture
def ds_id(db: Session, auth_a: dict) -> str:
    return add_dataset(db, tenant_id(db)).id


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every job id published, one at a time or in a batch."""
    calls: list[str] = []
    monkeypatch.setattr(broker, "publish_run_job", lambda _s, job_id, **_: calls.append(job_id))
    monkeypatch.setattr(broker, "publish_run_jobs", lambda _s, ids, **_: calls.extend(ids))
    return calls


def commit_batch(subs: list[Submission]) -> None:
    """What the group commit's two threads do for one batch, in order: commit, then publish
    (in this process)."""
    for settings, job_ids in commit_submissions(subs):
        publish_jobs(settings, job_ids)


def route_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every submit goes to the route."""
    async def none(_self: FastSubmit, _scope: object) -> None:
        return None

    monkeypatch.setattr(FastSubmit, "_tenant_id", none)


def post(client: TestClient, auth: dict, body: bytes, **headers: str) -> httpx.Response:
    return client.post("/v1/jobs", content=body,
                       headers={**auth, "Content-Type": "application/json", **headers})


def settled(app) -> None:  # noqa: ANN001
    """Waits for the app's submits to be published too (answers come first)."""
    assert app.state.submits.drain(5)


def answer(resp: httpx.Response) -> tuple[int, list, bytes]:
    """All of an answer: its status, every header in order (Retry-After included), its body."""
    return resp.status_code, resp.headers.raw, resp.content


# ---------------------------------------------------------------- the answer


def test_the_lane_answers_what_the_route_would(client, app, db, auth_a, ds_id, counting,
                                               published, monkeypatch) -> None:  # noqa: ANN001
    body = json.dumps(small_spec(ds_id, seed=3, name="n", tags=["b", "a", "b"])).encode()
    fast = post(client, auth_a, body)
    assert counting.count == 1
    assert fast.status_code == 202, fast.text
    job = db.get(Job, fast.json()["id"])
    assert job is not None and job.status == JobStatus.queued
    expected = job_response(job, 202, Location=f"/v1/jobs/{job.id}")
    assert fast.content == expected.body
    assert fast.headers["etag"] == expected.headers["etag"]
    assert fast.headers["location"] == f"/v1/jobs/{job.id}"
    settled(app)
    assert published == [job.id]
    route_only(monkeypatch)
    slow = post(client, auth_a, body)
    assert counting.count == 1 and slow.status_code == 202
    # Header for header and field for field what the route answers; only the job differs.
    assert [k for k, _ in fast.headers.raw] == [k for k, _ in slow.headers.raw]
    differ = {"id", "created_at", "updated_at", "dispatched_at"}
    assert {k: v for k, v in fast.json().items() if k not in differ} == \
        {k: v for k, v in slow.json().items() if k not in differ}
    tags = db.execute(text("SELECT job_id, tag FROM job_tags ORDER BY tag")).all()
    assert sorted(tags) == sorted([(fast.json()["id"], "a"), (fast.json()["id"], "b"),
                                   (slow.json()["id"], "a"), (slow.json()["id"], "b")])


def test_a_lane_answer_counts_under_the_route_in_request_stats(client, app, auth_a, ds_id,
                                                              counting, published) -> None:  # noqa: ANN001
    assert post(client, auth_a, json.dumps(small_spec(ds_id)).encode()).status_code == 202
    assert counting.count == 1
    counts, _, _ = app.state.request_stats.snapshot()
    assert counts.get(("POST", "/v1/jobs", "202")) == 1


# ---------------------------------------------------------------- what goes to the route

BAD_BODIES = [b"{", b"[]", b"null", b"", b'{"dataset_id": 3}', "\ud800".encode("utf-8", "surrogatepass"),
              json.dumps({"model": {"hidden_layers": [8]}}).encode()]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_body_the_route_refuses_is_answered_by_the_route(client, auth_a, counting, published,
                                                           monkeypatch, body) -> None:  # noqa: ANN001
    fast = post(client, auth_a, body)
    assert counting.count == 0 and fast.status_code == 422
    route_only(monkeypatch)
    slow = post(client, auth_a, body)
    assert (fast.status_code, fast.headers.raw, fast.content) == \
        (slow.status_code, slow.headers.raw, slow.content)
    assert published == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "application/problem+json"])
def test_other_content_types_go_to_the_route(client, auth_a, ds_id, counting, published,
                                             content_type) -> None:  # noqa: ANN001
    body = json.dumps(small_spec(ds_id)).encode()
    resp = client.post("/v1/jobs", content=body, headers={**auth_a, "Content-Type": content_type})
    assert counting.count == 0
    assert resp.status_code == (202 if content_type.endswith("+json") else 422)


def test_no_content_type_and_a_charset_are_json_as_for_the_route(client, auth_a, ds_id,
                                                                 counting, published) -> None:  # noqa: ANN001
    body = json.dumps(small_spec(ds_id)).encode()
    assert client.post("/v1/jobs", content=body, headers=auth_a).status_code == 202
    assert post(client, auth_a, body,
                **{"Content-Type": "application/json; charset=utf-8"}).status_code == 202
    assert counting.count == 2


def test_unknown_keys_go_to_the_route(client, auth_a, ds_id, counting, published) -> None:  # noqa: ANN001
    body = json.dumps(small_spec(ds_id)).encode()
    for auth in ({}, {"Authorization": "Bearer drt_nope"}, {"Authorization": "Basic abc"}):
        assert post(client, auth, body).status_code == 401
    assert counting.count == 0 and published == []


def test_an_idempotency_key_goes_to_the_route_and_replays_through_the_batch(
        client, app, db, auth_a, auth_b, ds_id, counting, published) -> None:  # noqa: ANN001
    body = json.dumps(small_spec(ds_id, name="keyed")).encode()
    first = post(client, auth_a, body, **{"Idempotency-Key": "k1"})
    again = post(client, auth_a, body, **{"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    # The replay reads the committed row: the job as the submit answered it, and as a read
    # answers it (the same ETag).
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["etag"] == client.get(first.headers["location"],
                                               headers=auth_a).headers["etag"]
    other = post(client, auth_a, json.dumps(small_spec(ds_id, name="other")).encode(),
                 **{"Idempotency-Key": "k1"})
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert other.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    # Another key is another job; so is the same key of another tenant.
    k2 = post(client, auth_a, body, **{"Idempotency-Key": "k2"})
    theirs = post(client, auth_b, body, **{"Idempotency-Key": "k1"})
    assert (k2.status_code, theirs.status_code) == (202, 422)  # b may not use a's dataset
    theirs = post(client, auth_b, json.dumps(small_spec("builtin:digits")).encode(),
                  **{"Idempotency-Key": "k1"})
    assert theirs.status_code == 202
    assert counting.count == 0
    settled(app)
    assert published == [first.json()["id"], k2.json()["id"], theirs.json()["id"]]
    assert db.scalar(select(func.count()).select_from(Job)) == 3


def test_an_address_over_its_failed_auth_budget_gets_the_routes_429(client, app, auth_a, ds_id,
                                                                    counting, published) -> None:  # noqa: ANN001
    app.state.auth_limiter = limiter = FailedAuthLimiter(1, 60.0)
    limiter.record_failure("testclient")
    resp = post(client, auth_a, json.dumps(small_spec(ds_id)).encode())
    assert resp.status_code == 429 and counting.count == 0


def test_a_large_body_goes_to_the_route_whole(client, auth_a, ds_id, counting, published) -> None:  # noqa: ANN001
    spec = small_spec(ds_id, name="x" * (MAX_BODY_BYTES + 10))
    resp = client.post("/v1/jobs", json=spec, headers=auth_a)
    assert resp.status_code == 422 and counting.count == 0
    assert resp.json()["errors"][0]["loc"] == ["body", "name"]


def test_a_body_in_chunks_and_a_receive_error_reach_the_route_as_they_came() -> None:
    chunks = [{"type": "http.request", "body": b'{"a":', "more_body": True},
              {"type": "http.request", "body": b" 1}", "more_body": False}]

    async def run() -> None:
        sent = list(chunks)

        async def receive() -> dict:
            return sent.pop(0)

        body, replay = await _read_body(receive)
        assert body == b'{"a": 1}'
        assert [await replay(), await replay()] == chunks

        stalled = [chunks[0]]

        async def failing() -> dict:
            if stalled:
                return stalled.pop(0)
            raise TimeoutError("stalled")

        body, replay = await _read_body(failing)
        assert body is None and await replay() == chunks[0]
        with pytest.raises(TimeoutError):
            await replay()

    asyncio.run(run())


# ---------------------------------------------------------------- refusals, answered by the lane


def test_dataset_errors_are_answered_by_the_lane_as_the_route_answers_them(
        client, db, auth_a, auth_b, ds_id, counting, published, monkeypatch) -> None:  # noqa: ANN001
    client.get("/v1/jobs", headers=auth_b)
    foreign = post(client, auth_b, json.dumps(small_spec(ds_id)).encode())  # a's dataset
    cases = [small_spec("no-such-dataset"),
             small_spec(ds_id, model={"hidden_layers": [8192, 8192]}),  # too many parameters
             small_spec(add_dataset(db, tenant_id(db), feature_range=(-1.0, 2.0)).id,
                        model={"visible_units": "bernoulli", "hidden_layers": [4]}),
             small_spec(ds_id, test_dataset_id="no-such-dataset")]
    bodies = [json.dumps(c).encode() for c in cases]
    fast = [post(client, auth_a, b) for b in bodies]
    assert counting.count == 1 + len(cases) and published == []
    with monkeypatch.context() as m:
        route_only(m)
        foreign_slow = post(client, auth_b, json.dumps(small_spec(ds_id)).encode())
        slow = [post(client, auth_a, b) for b in bodies]
    assert counting.count == 1 + len(cases)  # the route answered these
    assert foreign.status_code == 422 and answer(foreign) == answer(foreign_slow)
    for f, s in zip(fast, slow, strict=True):
        assert f.status_code == 422, f.text
        assert f.headers["content-type"] == "application/problem+json"
        assert answer(f) == answer(s)
    assert [f.json()["errors"][0]["loc"][-1] for f in fast] == [
        "dataset_id", "hidden_layers", "visible_units", "test_dataset_id"]
    assert db.scalar(select(func.count()).select_from(Job)) == 0 and published == []


def test_over_the_cap_and_the_quota_the_lane_answers_as_the_route_does(
        client, app, db, auth_a, ds_id, counting, published, monkeypatch) -> None:  # noqa: ANN001
    app.state.settings = app.state.settings.model_copy(
        update={"max_concurrent_jobs_per_tenant": 2, "max_queued_jobs_per_tenant": 0,
                "tenant_storage_quota_bytes": 1000})
    owner = tenant_id(db)
    add_job(db, owner, JobStatus.running)
    body = json.dumps(small_spec(ds_id)).encode()
    assert post(client, auth_a, body).status_code == 202
    capped = post(client, auth_a, body)
    assert counting.count == 2
    assert capped.status_code == 429 and "queue is full" in capped.json()["detail"]
    assert capped.headers["retry-after"] == str(service.RETRY_AFTER_SECONDS)
    assert capped.headers["content-type"] == "application/problem+json"
    with monkeypatch.context() as m:
        route_only(m)
        capped_route = post(client, auth_a, body)
    assert counting.count == 2 and answer(capped) == answer(capped_route)
    db.execute(text("UPDATE jobs SET status = 'succeeded' WHERE tenant_id = :t"), {"t": owner})
    tenants_repo.add_storage(db, owner, 1000)
    db.commit()
    full = post(client, auth_a, body)
    assert counting.count == 3
    assert full.status_code == 429 and "quota" in full.json()["detail"]
    assert full.headers["content-type"] == "application/problem+json"
    with monkeypatch.context() as m:
        route_only(m)
        full_route = post(client, auth_a, body)
    assert counting.count == 3 and answer(full) == answer(full_route)
    # And what an app without the shortcuts answers, byte for byte.
    plain = create_app(app.state.settings, engine=app.state.engine, store=app.state.store,
                       shortcuts=False)
    plain.state.sessionmaker = app.state.sessionmaker
    plain.dependency_overrides = app.dependency_overrides
    with TestClient(plain) as other:
        assert answer(post(other, auth_a, body)) == answer(full)
    settled(app)
    assert len(published) == 1
    assert db.scalar(select(func.count()).select_from(Job)) == 2


# ---------------------------------------------------------------- the batch


def _subs(app, owner: str, specs: list[dict], key: str | None = None) -> list[Submission]:  # noqa: ANN001
    state = app.state
    return [Submission(state.sessionmaker, state.settings, owner, JobSpec.model_validate(s),
                       idempotency_key=key) for s in specs]


def _jobs(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Job))  # type: ignore[return-value]


def test_a_refused_submission_leaves_the_rest_of_its_batch_alone(app, db, auth_a, auth_b,
                                                                 ds_id, published) -> None:  # noqa: ANN001
    app.state.settings = app.state.settings.model_copy(
        update={"max_concurrent_jobs_per_tenant": 1, "max_queued_jobs_per_tenant": 1,
                "tenant_storage_quota_bytes": 1000})
    a, b = tenant_id(db), tenant_id(db, "tenant-b")
    c = tenant_by_name(db, "tenant-c") or tenants_repo.add_tenant(db, "tenant-c")
    tenants_repo.add_storage(db, c.id, 1000)  # at its quota
    db.commit()
    subs = (_subs(app, a, [small_spec(ds_id), small_spec("no-such-dataset"), small_spec(ds_id),
                           small_spec(ds_id)])  # a's second valid job waits, its third is
            + _subs(app, b, [small_spec("builtin:digits")])  # one past the queue
            + _subs(app, c.id, [small_spec("builtin:digits")]))
    commit_batch(subs)
    outcomes = [type(s.error) if s.error is not None else s.created for s in subs]
    assert outcomes == [True, Invalid, True, TooManyJobs, True, QuotaExhausted]
    assert all((s.job is None) == (s.error is not None) for s in subs)
    assert subs[3].error.headers == {"Retry-After": str(service.RETRY_AFTER_SECONDS)}  # type: ignore[union-attr]
    assert sorted(published) == sorted([subs[0].job["id"], subs[4].job["id"]])  # type: ignore[index]
    rows = {j.id: j for j in db.scalars(select(Job)).all()}
    assert set(rows) == {s.job["id"] for s in subs if s.job is not None}
    assert all(r.status == JobStatus.queued for r in rows.values())
    assert rows[subs[2].job["id"]].dispatched_at is None  # type: ignore[index]


def test_a_submission_that_breaks_its_batch_is_tried_alone_and_fails_alone(
        app, db, auth_a, ds_id, published, monkeypatch) -> None:  # noqa: ANN001
    real = service.check_against_dataset

    def check(session: Session, settings: Settings, tenant: str, spec: JobSpec,
              *args: object, **kw: object) -> object:
        if spec.name == "bad":
            raise RuntimeError("a bug that only this submission meets")
        return real(session, settings, tenant, spec, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "check_against_dataset", check)
    owner = tenant_id(db)
    subs = (_subs(app, owner, [small_spec(ds_id, name="ok")])
            + _subs(app, owner, [small_spec(ds_id, name="keyed")] * 2, key="k1")
            + _subs(app, owner, [small_spec(ds_id, name="bad"), small_spec(ds_id, name="ok")]))
    commit_batch(subs)
    assert [s.created for s in subs] == [True, True, False, False, True]
    assert subs[3].job is None and isinstance(subs[3].error, RuntimeError)
    assert all(s.error is None for s in subs if s is not subs[3])
    # Tried alone, the second submission of the key still replays the first's job.
    assert subs[2].job is not None and subs[2].job["id"] == subs[1].job["id"]  # type: ignore[index]
    assert sorted(published) == sorted(subs[n].job["id"] for n in (0, 1, 4))  # type: ignore[index]
    assert sorted(j.name for j in db.scalars(select(Job))) == ["keyed", "ok", "ok"]


def test_a_batch_that_fails_before_its_commit_keeps_nothing(app, db, auth_a, ds_id, published,
                                                           monkeypatch) -> None:  # noqa: ANN001
    def broken(*_args: object, **_kw: object) -> None:
        raise OperationalError("INSERT", {}, Exception("database gone"))

    subs = _subs(app, tenant_id(db), [small_spec(ds_id)] * 3)
    with monkeypatch.context() as m:
        m.setattr(Session, "flush", broken)
        commit_batch(subs)
    # Each tried alone, each met its own error: a 500 apiece, no job kept, none published.
    assert all(s.job is None and isinstance(s.error, OperationalError) for s in subs)
    assert len({id(s.error) for s in subs}) == 3
    assert published == [] and _jobs(db) == 0


def test_a_failed_commit_is_every_accepted_submissions_error(app, db, auth_a, ds_id,
                                                            published) -> None:  # noqa: ANN001
    owner = tenant_id(db)
    earlier = _subs(app, owner, [small_spec(ds_id)], key="k1")
    commit_batch(earlier)
    published.clear()
    factory = app.state.sessionmaker
    failure = OperationalError("COMMIT", {}, Exception("connection lost"))

    def failing_commit() -> Session:
        session = factory()

        def commit() -> None:
            raise failure

        session.commit = commit
        return session

    subs = (_subs(app, owner, [small_spec(ds_id), small_spec("no-such-dataset")])
            + _subs(app, owner, [small_spec(ds_id)], key="k1"))
    for sub in subs:
        sub.factory = failing_commit  # type: ignore[assignment]
    commit_batch(subs)
    assert (subs[0].job, subs[0].error) == (None, failure)  # may have committed: a 500
    assert subs[1].job is None and isinstance(subs[1].error, Invalid)  # its own refusal
    assert subs[2].error is None and not subs[2].created  # a replay, committed before
    assert subs[2].job["id"] == earlier[0].job["id"]  # type: ignore[index]
    assert published == [] and _jobs(db) == 1


def test_a_failed_commit_is_the_same_500_from_the_lane_and_the_route(app, auth_a, ds_id,
                                                                    monkeypatch) -> None:  # noqa: ANN001
    counting = Counting(monkeypatch)

    def fail(subs: list[Submission]) -> list:
        for sub in subs:
            sub.refuse(OperationalError("COMMIT", {}, Exception("connection lost")))
        return []

    body = json.dumps(small_spec(ds_id)).encode()
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/v1/jobs", headers=auth_a)
        monkeypatch.setattr(app.state.submits.group, "commit", fail)
        fast = post(client, auth_a, body)
        # The lane answers the error itself, as the app's handler would: nothing it raises
        # reaches the server (which would drop the connection).
        assert counting.count == 1 and counting.raised == []
        with monkeypatch.context() as m:
            route_only(m)
            slow = post(client, auth_a, body)
    assert counting.raised == []
    assert fast.status_code == 500
    assert fast.headers["content-type"] == "application/problem+json"
    assert answer(fast) == answer(slow)


def test_broker_failures_leave_the_jobs_queued_and_answer_202(client, db, auth_a, ds_id,
                                                             counting, monkeypatch) -> None:  # noqa: ANN001
    def down(*_args: object, **_kw: object) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(broker, "publish_run_job", down)
    monkeypatch.setattr(broker, "publish_run_jobs", down)
    resp = post(client, auth_a, json.dumps(small_spec(ds_id)).encode())
    assert resp.status_code == 202 and counting.count == 1
    assert db.get(Job, resp.json()["id"]).status == JobStatus.queued


def test_a_failed_batch_publish_goes_one_by_one_until_one_fails(monkeypatch, settings) -> None:  # noqa: ANN001
    one: list[str] = []

    def batch(*_args: object, **_kw: object) -> None:
        raise ConnectionError("pipeline failed")

    def single(_settings: object, job_id: str, **_kw: object) -> None:
        if job_id == "j3":
            raise ConnectionError("down again")
        one.append(job_id)

    monkeypatch.setattr(broker, "publish_run_jobs", batch)
    monkeypatch.setattr(broker, "publish_run_job", single)
    publish_jobs(settings, ["j1", "j2", "j3", "j4"])  # never raises
    assert one == ["j1", "j2"]  # j4 is left to the reaper, as j3 is


# ---------------------------------------------------------------- Idempotency-Keys in a batch


def test_one_new_key_twice_in_one_batch_is_one_job(app, db, auth_a, ds_id, published) -> None:  # noqa: ANN001
    owner = tenant_id(db)
    first, second = _subs(app, owner, [small_spec(ds_id, name="k")] * 2, key="k1")
    other, = _subs(app, owner, [small_spec(ds_id, name="other")], key="k1")
    commit_batch([first, second, other])
    assert first.created and first.error is None and first.job is not None
    assert (second.created, second.error) == (False, None) and second.job is not None
    assert second.job["id"] == first.job["id"]
    # The replay reads the committed row; it answers what the submit answered.
    assert job_response(second.job, 200).body == job_response(first.job, 202).body
    assert other.job is None and isinstance(other.error, Invalid)
    assert published == [first.job["id"]] and _jobs(db) == 1


def test_a_key_whose_first_submission_is_refused_is_a_conflict_for_its_batch(
        app, db, auth_a, ds_id, published) -> None:  # noqa: ANN001
    owner = tenant_id(db)
    refused = _subs(app, owner, [small_spec("no-such-dataset")], key="k1")
    later = _subs(app, owner, [small_spec(ds_id)], key="k1")
    commit_batch(refused + later)
    assert isinstance(refused[0].error, Invalid)
    assert isinstance(later[0].error, Conflict) and later[0].job is None  # send it again: 409
    assert published == [] and _jobs(db) == 0
    again = _subs(app, owner, [small_spec(ds_id)], key="k1")
    commit_batch(again)
    assert again[0].created and published == [again[0].job["id"]]  # type: ignore[index]


@pytest.fixture(params=["sqlite", "postgresql"])
def real_db(request: pytest.FixtureRequest) -> Iterator[tuple[Settings, Engine, str, str]]:
    """A database whose sessions are transactions of their own (not the test's one
    connection), a tenant allowed 5 running jobs and 10 waiting: (settings, engine, its key,
    its id)."""
    if request.param == "sqlite":
        settings, engine, key = request.getfixturevalue("embedded")
        with Session(engine) as s:
            owner = tenant_by_name(s, "local").id  # type: ignore[union-attr]
        yield settings, engine, key, owner
        return
    settings = request.getfixturevalue("settings").model_copy(
        update={"max_concurrent_jobs_per_tenant": 5, "max_queued_jobs_per_tenant": 10})
    engine = request.getfixturevalue("engine")
    name = f"lane-{uuid.uuid4().hex[:8]}"
    with Session(engine) as s:
        key = create_key(s, name)
        owner = tenant_by_name(s, name).id  # type: ignore[union-attr]
        s.commit()
    try:
        yield settings, engine, key, owner
    finally:
        with Session(engine) as s:
            s.execute(text("DELETE FROM jobs WHERE tenant_id = :t"), {"t": owner})
            s.delete(s.get(Tenant, owner))
            s.commit()


def test_a_keyed_submit_that_loses_the_race_for_its_key_replays_the_winner(
        real_db, published, monkeypatch) -> None:  # noqa: ANN001
    settings, engine, _key, owner = real_db
    factory = make_sessionmaker(engine)
    spec = JobSpec.model_validate(small_spec("builtin:digits", name="raced"))
    winner = service.job_row(settings, owner, spec, idempotency_key="k1")
    real = service.check_against_dataset
    raced: list[bool] = []

    def check(*args: object, **kw: object) -> object:
        # Another API process commits the key after this batch looked for it, before the
        # insert: the unique index refuses this batch's row.
        if not raced:
            with Session(engine) as other:
                q.insert_jobs(other, [winner])
                other.commit()
            raced.append(True)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "check_against_dataset", check)
    inserted: list[bool] = []
    real_insert = submit_batch._insert_keyed

    def insert_keyed(session: Session, row: dict) -> bool:
        inserted.append(real_insert(session, row))
        return inserted[-1]

    monkeypatch.setattr(submit_batch, "_insert_keyed", insert_keyed)
    loser = Submission(factory, settings, owner, spec, idempotency_key="k1")
    plain = Submission(factory, settings, owner,
                       JobSpec.model_validate(small_spec("builtin:digits", name="plain")))
    commit_batch([loser, plain])
    assert raced == [True] and inserted == [False]  # the unique index refused the insert
    assert loser.error is None and not loser.created and loser.job is not None
    assert loser.job["id"] == winner["id"]  # a replay, never a 500
    assert plain.created and published == [plain.job["id"]]  # type: ignore[index]
    # The same race with another body: the key was used for another request, a 422.
    raced.clear()
    winner = service.job_row(settings, owner, spec, idempotency_key="k2")
    changed = Submission(factory, settings, owner,
                         JobSpec.model_validate(small_spec("builtin:digits", name="changed")),
                         idempotency_key="k2")
    commit_batch([changed])
    assert raced == [True] and changed.job is None and isinstance(changed.error, Invalid)
    with Session(engine) as s:
        names = s.scalars(select(Job.name).where(Job.tenant_id == owner)).all()
    assert sorted(names) == ["plain", "raced", "raced"]  # type: ignore[type-var]


def test_a_replayed_race_loser_takes_no_room_under_the_cap(real_db, published,
                                                           monkeypatch) -> None:  # noqa: ANN001
    settings, engine, _key, owner = real_db  # 5 active jobs allowed
    factory = make_sessionmaker(engine)
    spec = JobSpec.model_validate(small_spec("builtin:digits", name="raced"))
    real = service.check_against_dataset
    raced: list[bool] = []

    def check(*args: object, **kw: object) -> object:
        if not raced:
            with Session(engine) as other:
                q.insert_jobs(other, [service.job_row(settings, owner, spec,
                                                      idempotency_key="k1")])
                other.commit()
            raced.append(True)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "check_against_dataset", check)
    loser = Submission(factory, settings, owner, spec, idempotency_key="k1")
    plain = [Submission(factory, settings, owner,
                        JobSpec.model_validate(small_spec("builtin:digits", name=f"p{n}")))
             for n in range(4)]
    commit_batch([loser, *plain])
    assert not loser.created and loser.error is None
    # The winner and these four are the 5 the cap allows.
    assert [(p.created, p.error) for p in plain] == [(True, None)] * 4
    assert _active(engine, owner) == 5


def test_an_error_after_the_commit_never_commits_the_batch_twice(app, db, auth_a, ds_id,
                                                                 published, monkeypatch) -> None:  # noqa: ANN001
    owner = tenant_id(db)
    real = q.find_by_idempotency_key
    calls: list[None] = []

    def find(*args: object, **kw: object) -> object:
        calls.append(None)
        if len(calls) == 3:  # two in the checks; the third settles the batch's replay
            raise OperationalError("SELECT", {}, Exception("connection lost"))
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(q, "find_by_idempotency_key", find)
    subs = (_subs(app, owner, [small_spec(ds_id, name="plain")])
            + _subs(app, owner, [small_spec(ds_id, name="keyed")] * 2, key="k1"))
    commit_batch(subs)
    assert sorted(j.name for j in db.scalars(select(Job))) == ["keyed", "plain"]
    # The replay whose read failed answers that error alone; the others keep their jobs.
    assert isinstance(subs[2].error, OperationalError) and subs[2].job is None
    assert subs[0].created and subs[1].created


def test_a_failed_commit_is_the_error_of_a_replay_waiting_on_it(app, db, auth_a, ds_id,
                                                                 published, monkeypatch) -> None:  # noqa: ANN001
    owner = tenant_id(db)
    subs = _subs(app, owner, [small_spec(ds_id, name="keyed")] * 2, key="k1")
    failure = OperationalError("COMMIT", {}, Exception("connection lost"))

    def broken_commit(_session: Session) -> None:
        raise failure

    monkeypatch.setattr(Session, "commit", broken_commit)
    commit_batch(subs)
    assert [(sub.job, sub.error) for sub in subs] == [(None, failure), (None, failure)]


def test_concurrent_submits_of_one_key_are_one_job(real_db, published) -> None:  # noqa: ANN001
    settings, engine, key, owner = real_db
    app = create_app(settings, engine=engine)

    async def submit_all(n: int) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
            return await asyncio.gather(*(c.post(
                "/v1/jobs", json=small_spec("builtin:digits"),
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "same"})
                for _ in range(n)))

    responses = asyncio.run(submit_all(16))
    assert Counter(r.status_code for r in responses) == Counter({202: 1, 200: 15})
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.content for r in responses}) == 1  # a replay answers what the submit did
    settled(app)
    assert _active(engine, owner) == 1 and published == [responses[0].json()["id"]]


# ---------------------------------------------------------------- the group commit


def test_the_group_commit_answers_everyone_even_when_a_batch_raises() -> None:
    delivered: list[object] = []
    done: list[object] = []

    def explode(_batch: list[object]) -> list[object]:
        raise RuntimeError("bug")

    group: GroupCommit[object, object] = GroupCommit(explode, delivered.extend, done.extend,
                                                     name="test", idle_seconds=0.05)
    items = [object() for _ in range(3)]
    for item in items:
        group.put(item)
    assert group.drain(5)
    assert sorted(map(id, delivered)) == sorted(map(id, items))
    assert done == []


def test_the_group_commit_answers_before_it_publishes_and_drain_waits_for_both() -> None:
    events: list[str] = []
    publishing = threading.Event()
    release = threading.Event()

    def commit(batch: list[str]) -> list[str]:
        return [f"j{n}" for n in range(len(batch))]

    def publish(done: list[str]) -> None:
        events.append(f"publish {','.join(done)}")
        publishing.set()
        release.wait(5)

    group: GroupCommit[str, str] = GroupCommit(
        commit, lambda batch: events.append(f"answer {len(batch)}"), publish, name="test",
        idle_seconds=5)
    assert group.drain(0)  # nothing in hand
    group.put("a")
    assert publishing.wait(5)
    assert events == ["answer 1", "publish j0"]  # answered first, published after
    assert not group.drain(0.2)  # the publish is still in hand
    release.set()
    assert group.drain(5)  # and waited for (the threads themselves idle on)


def test_a_submit_is_answered_before_its_jobs_are_published(settings) -> None:  # noqa: ANN001
    calls: list[tuple[Settings, list[str]]] = []
    publishing = threading.Event()
    release = threading.Event()

    def publish(s: Settings, job_ids: list[str]) -> None:
        calls.append((s, job_ids))
        publishing.set()
        release.wait(5)

    def commit(batch: list[Submission]) -> list[tuple[Settings, list[str]]]:
        for sub in batch:
            if sub.spec.name == "refused":
                sub.refuse(TooManyJobs("at most 0 active jobs per tenant"))
            else:
                sub.job, sub.created = {"id": f"job-{sub.spec.name}"}, True
        return [(batch[0].settings, [s.job["id"] for s in batch if s.job is not None])]

    submits = Submits(publish)
    submits.group.commit = commit
    state = SimpleNamespace(sessionmaker=None, settings=settings)

    def submit(name: str) -> Submission:
        spec = JobSpec.model_validate(small_spec("builtin:digits", name=name))
        return asyncio.run(asyncio.wait_for(submits.submit(state, "t", spec), 5))

    sub = submit("a")
    assert not release.is_set()  # answered while its publish waits
    assert (sub.job, sub.created, sub.error) == ({"id": "job-a"}, True, None)
    assert publishing.wait(5) and not submits.drain(0.2)
    release.set()
    assert submits.drain(5)
    assert calls == [(settings, ["job-a"])]
    with pytest.raises(TooManyJobs):  # a refusal is raised, for the caller to answer
        submit("refused")

    def explode(_batch: list[Submission]) -> list:
        raise RuntimeError("bug")

    submits.group.commit = explode
    with pytest.raises(RuntimeError, match="without an outcome"):  # answered, never left waiting
        submit("b")
    assert submits.drain(5)


def test_submits_publish_what_several_batches_committed_together_per_settings(
        settings) -> None:  # noqa: ANN001
    calls: list[tuple[Settings, list[str]]] = []
    submits = Submits(lambda s, ids: calls.append((s, ids)))
    other = settings.model_copy()
    submits._publish_together([(settings, ["a"]), (other, ["b"]), (settings, ["c", "d"])])
    assert calls == [(settings, ["a", "c", "d"]), (other, ["b"])]


# ---------------------------------------------------------------- broker, for real


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Settings, Engine, str]]:
    """SQLite and the filesystem broker, a committed tenant and its key."""
    settings = Settings(data_dir=tmp_path, database_url="", broker_url="", storage_url="",
                        environment="embedded", max_concurrent_jobs_per_tenant=5,
                        max_queued_jobs_per_tenant=10, fashion_mnist_dir=tmp_path / "none")
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    with session_scope(make_sessionmaker(engine)) as s:
        key = create_key(s, "local")
    try:
        yield settings, engine, key
    finally:
        engine.dispose()


def test_messages_reach_the_broker_after_the_commit(embedded, monkeypatch) -> None:  # noqa: ANN001
    settings, engine, key = embedded
    seen: list[tuple[str, str | None]] = []
    real_one, real_many = broker.publish_run_job, broker.publish_run_jobs

    def committed(job_ids: list[str]) -> None:
        with engine.connect() as conn:
            for job_id in job_ids:
                seen.append((job_id, conn.execute(text("SELECT status FROM jobs WHERE id = :i"),
                                                  {"i": job_id}).scalar()))

    def one(s: Settings, job_id: str, **kw: object) -> None:
        committed([job_id])
        real_one(s, job_id, **kw)  # type: ignore[arg-type]

    def many(s: Settings, job_ids: list[str], **kw: object) -> None:
        committed(job_ids)
        real_many(s, job_ids, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(broker, "publish_run_job", one)
    monkeypatch.setattr(broker, "publish_run_jobs", many)
    app = create_app(settings, engine=engine)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        assert client.get("/v1/jobs", headers=auth).json()["items"] == []
        resp = client.post("/v1/jobs", json=small_spec("builtin:digits"), headers=auth)
        # Read-your-writes through the job cache: the lane's commit is this process's.
        listed = client.get("/v1/jobs", headers=auth).json()["items"]
    assert resp.status_code == 202
    assert [j["id"] for j in listed] == [resp.json()["id"]]
    job_id = resp.json()["id"]
    # A batch of several, as the lane's thread commits them.
    with session_scope(make_sessionmaker(engine)) as s:
        owner = tenant_by_name(s, "local").id  # type: ignore[union-attr]
    subs = [Submission(app.state.sessionmaker, settings, owner,
                       JobSpec.model_validate(small_spec("builtin:digits", seed=i)))
            for i in range(3)]
    commit_batch(subs)
    ids = [job_id, *(s.job["id"] for s in subs if s.job is not None)]
    assert len(ids) == 4
    assert seen == [(i, "queued") for i in ids]
    assert job_ids_in_broker(settings, queue=broker.DEFAULT_QUEUE) == set(ids)


def test_batched_messages_are_send_tasks_own(embedded) -> None:  # noqa: ANN001
    settings, _engine, _key = embedded
    broker.publish_run_job(settings, "a" * 32)
    broker.publish_run_jobs(settings, ["b" * 32, "c" * 32])
    folder = settings.broker_folder / "queue"
    messages = [json.loads(p.read_bytes()) for p in sorted(folder.glob("*.msg"))]
    assert len(messages) == 3

    def shape(message: dict) -> dict:
        headers = {k: v for k, v in message["headers"].items()
                   if k not in ("id", "root_id", "argsrepr")}
        props = {k: v for k, v in message["properties"].items()
                 if k not in ("correlation_id", "delivery_tag")}
        props["delivery_info"] = message["properties"]["delivery_info"]
        return {"headers": headers, "properties": props,
                "content-type": message["content-type"]}

    assert shape(messages[0]) == shape(messages[1]) == shape(messages[2])
    assert sorted(job_id_of(m) for m in messages) == ["a" * 32, "b" * 32, "c" * 32]
    # What differs from message to message is made as send_task makes it (the first one).
    for m in messages:
        headers = m["headers"]
        assert headers["argsrepr"] == f"['{job_id_of(m)}']"
        assert headers["root_id"] == headers["id"] == m["properties"]["correlation_id"]
        assert re.fullmatch(r"[0-9a-f-]{36}", headers["id"])
    assert len({m["headers"]["id"] for m in messages}) == 3
    assert [json.loads(base64.b64decode(m["body"]))[1:] for m in messages] == [
        [{}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]] * 3


# ---------------------------------------------------------------- concurrency and the cap


async def _submit_all(app, auth: dict, n: int) -> Counter[int]:  # noqa: ANN001
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        assert (await c.get("/v1/jobs", headers=auth)).status_code == 200  # key cached
        responses = await asyncio.gather(*(c.post("/v1/jobs", json=small_spec("builtin:digits"),
                                                  headers=auth) for _ in range(n)))
    return Counter(r.status_code for r in responses)


def _active(engine: Engine, owner: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Job).where(
            Job.tenant_id == owner, Job.status.in_([s.value for s in ACTIVE_STATUSES]))
        ).scalar_one()


@pytest.mark.parametrize("shortcuts", [True, False], ids=["lane", "route"])
def test_concurrent_submits_never_overshoot_the_cap(real_db, shortcuts, published,
                                                    monkeypatch) -> None:  # noqa: ANN001
    """Neither the running cap (5 dispatched, 5 published) nor the queue's bound (10 more
    waiting) is overshot by 32 submits at once."""
    settings, engine, key, owner = real_db
    counting = Counting(monkeypatch)
    app = create_app(settings, engine=engine, shortcuts=shortcuts)
    statuses = asyncio.run(_submit_all(app, {"Authorization": f"Bearer {key}"}, 32))
    assert statuses == Counter({202: 15, 429: 17})
    settled(app)
    assert _active(engine, owner) == 15 and len(published) == 5
    assert counting.count == (32 if shortcuts else 0)  # the lane answered its 429s too


def test_a_batch_goes_to_redis_in_one_pipeline_as_send_tasks_messages(monkeypatch) -> None:  # noqa: ANN001
    url = "redis://127.0.0.1:6379/12"  # the tests' Redis database (tests/worker)
    queue = f"test-{uuid.uuid4().hex[:8]}"
    settings = Settings(broker_url=url, environment="test")
    flushes: list[int] = []
    real_flush = PublishBatch.flush

    def flush(self: PublishBatch) -> None:
        flushes.append(self._buffered)
        real_flush(self)

    monkeypatch.setattr(PublishBatch, "flush", flush)
    client = redis.Redis.from_url(url)
    try:
        broker.publish_run_job(settings, "a" * 32, queue=queue)
        broker.publish_run_jobs(settings, ["b" * 32, "c" * 32, "d" * 32], queue=queue)
        assert flushes == [3]  # one round trip for the three
        messages = [json.loads(raw) for raw in reversed(client.lrange(queue, 0, -1))]
        assert [job_id_of(m) for m in messages] == ["a" * 32, "b" * 32, "c" * 32, "d" * 32]
        shapes = [({k: v for k, v in m["headers"].items() if k not in ("id", "root_id", "argsrepr")},
                   {k: v for k, v in m["properties"].items()
                    if k not in ("correlation_id", "delivery_tag")},
                   m["content-type"], m["content-encoding"]) for m in messages]
        assert shapes[1:] == [shapes[0]] * 3
        assert [m["headers"]["argsrepr"] for m in messages] == [
            f"['{job_id_of(m)}']" for m in messages]
        assert job_ids_in_broker(settings, queue=queue) == {"a" * 32, "b" * 32, "c" * 32, "d" * 32}
    finally:
        client.delete(queue)
        client.close()
