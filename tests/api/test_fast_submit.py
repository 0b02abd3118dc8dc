"""The fast lane of POST /v1/jobs (api/fast_submit.py) and its group commit
(drtrain/jobs/submit_batch.py): it answers exactly what the route answers, leaves
every refusal to the route (bad bodies, unknown keys, Idempotency-Key, the cap, the quota),
never lets concurrent submits pass the cap, and publishes only after the commit."""
from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

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
from api.http import job_response
from drtrain.jobs import service
from drtrain.jobs.spec import JobSpec
from drtrain.jobs.submit_batch import Submission, SubmitBatcher, commit_jobs
from drtrain.kit import broker
from drtrain.kit.broker_messages import job_id_of, job_ids_in_broker
from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.kit.migrate import upgrade
from drtrain.kit.models import ACTIVE_STATUSES, Job, JobStatus, Tenant
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore
from drtrain.tenants import repository as tenants_repo
from drtrain.tenants.keys import create_key
from drtrain.tenants.repository import tenant_by_name
from tests.factories import add_dataset, add_job, small_spec, tenant_id


class Counting:
    """Counts the submits the lane answered itself."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        answer = FastSubmit._answer

        async def counted(lane, *args):  # noqa: ANN001, ANN002, ANN202
            replay = await answer(lane, *args)
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
    """What the batcher's two threads do for one batch, in order: commit, then publish."""
    job_ids = commit_jobs(subs)
    if job_ids:
        service.publish_jobs(subs[0].settings, job_ids)


def route_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every submit goes to the route."""
    async def none(_self: FastSubmit, _scope: object) -> None:
        return None

    monkeypatch.setattr(FastSubmit, "_tenant_id", none)


def post(client: TestClient, auth: dict, body: bytes, **headers: str) -> httpx.Response:
    return client.post("/v1/jobs", content=body,
                       headers={**auth, "Content-Type": "application/json", **headers})


# ---------------------------------------------------------------- the answer


def test_the_lane_answers_what_the_route_would(client, db, auth_a, ds_id, counting, published,
                                               monkeypatch) -> None:  # noqa: ANN001
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
    assert published == [job.id]
    route_only(monkeypatch)
    slow = post(client, auth_a, body)
    assert counting.count == 1 and slow.status_code == 202
    # Header for header and field for field what the route answers; only the job differs.
    assert [k for k, _ in fast.headers.raw] == [k for k, _ in slow.headers.raw]
    differ = {"id", "created_at", "updated_at"}
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


def test_dataset_errors_are_the_routes(client, db, auth_a, auth_b, ds_id, counting, published,
                                       monkeypatch) -> None:  # noqa: ANN001
    foreign = client.post("/v1/jobs", json=small_spec(ds_id), headers=auth_b)
    assert foreign.status_code == 422  # another tenant's dataset (its key went to the route)
    cases = [small_spec("no-such-dataset"), small_spec(ds_id, model={"hidden_layers": [10**5]}),
             small_spec(add_dataset(db, tenant_id(db), feature_range=(-1.0, 2.0)).id,
                        model={"visible_units": "bernoulli", "hidden_layers": [4]})]
    bodies = [json.dumps(c).encode() for c in cases]
    fast = [post(client, auth_a, b) for b in bodies]
    assert counting.count == 0 and published == []
    route_only(monkeypatch)
    slow = [post(client, auth_a, b) for b in bodies]
    for f, s in zip(fast, slow, strict=True):
        assert f.status_code == 422 and (f.headers.raw, f.content) == (s.headers.raw, s.content)
    assert db.scalar(select(func.count()).select_from(Job)) == 0


def test_unknown_keys_and_idempotency_keys_are_the_routes(client, db, auth_a, ds_id, counting,
                                                          published) -> None:  # noqa: ANN001
    body = json.dumps(small_spec(ds_id)).encode()
    for auth in ({}, {"Authorization": "Bearer drt_nope"}, {"Authorization": "Basic abc"}):
        assert post(client, auth, body).status_code == 401
    first = post(client, auth_a, body, **{"Idempotency-Key": "k1"})
    again = post(client, auth_a, body, **{"Idempotency-Key": "k1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert counting.count == 0 and published == [first.json()["id"]]


def test_an_address_over_its_failed_auth_budget_gets_the_routes_429(client, app, auth_a, ds_id,
                                                                    counting, published) -> None:  # noqa: ANN001
    app.state.auth_limiter = limiter = FailedAuthLimiter(1, 60.0)
    limiter.record_failure("testclient")
    resp = post(client, auth_a, json.dumps(small_spec(ds_id)).encode())
    assert resp.status_code == 429 and counting.count == 0


def test_over_the_cap_and_the_quota_the_route_answers(client, app, db, auth_a, ds_id, counting,
                                                      published, monkeypatch) -> None:  # noqa: ANN001
    app.state.settings = app.state.settings.model_copy(
        update={"max_concurrent_jobs_per_tenant": 2, "tenant_storage_quota_bytes": 1000})
    owner = tenant_id(db)
    add_job(db, owner, JobStatus.running)
    body = json.dumps(small_spec(ds_id)).encode()
    assert post(client, auth_a, body).status_code == 202
    assert counting.count == 1
    capped = post(client, auth_a, body)
    assert capped.status_code == 429 and counting.count == 1
    assert capped.headers["retry-after"] and "active jobs" in capped.json()["detail"]
    db.execute(text("UPDATE jobs SET status = 'succeeded' WHERE tenant_id = :t"), {"t": owner})
    tenants_repo.add_storage(db, owner, 1000)
    db.commit()
    full = post(client, auth_a, body)
    assert full.status_code == 429 and "quota" in full.json()["detail"]
    assert counting.count == 1 and len(published) == 1
    route_only(monkeypatch)
    again = post(client, auth_a, body)
    assert (full.headers.raw, full.content) == (again.headers.raw, again.content)


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


# ---------------------------------------------------------------- the batch


def _subs(app, owner: str, specs: list[dict]) -> list[Submission]:  # noqa: ANN001
    state = app.state
    return [Submission(state.sessionmaker, state.settings, owner, JobSpec.model_validate(s))
            for s in specs]


def test_a_refused_submission_leaves_the_rest_of_its_batch_alone(app, db, auth_a, auth_b,
                                                                 ds_id, published) -> None:  # noqa: ANN001
    app.state.settings = app.state.settings.model_copy(
        update={"max_concurrent_jobs_per_tenant": 2, "tenant_storage_quota_bytes": 1000})
    a, b = tenant_id(db), tenant_id(db, "tenant-b")
    c = tenant_by_name(db, "tenant-c") or tenants_repo.add_tenant(db, "tenant-c")
    tenants_repo.add_storage(db, c.id, 1000)  # at its quota
    db.commit()
    subs = (_subs(app, a, [small_spec(ds_id), small_spec("no-such-dataset"), small_spec(ds_id),
                           small_spec(ds_id)])  # the third of a's jobs is one over the cap
            + _subs(app, b, [small_spec("builtin:digits")])
            + _subs(app, c.id, [small_spec("builtin:digits")]))
    commit_batch(subs)
    accepted = [s.job is not None for s in subs]
    assert accepted == [True, False, True, False, True, False]
    assert all(s.error is None for s in subs)
    assert sorted(published) == sorted(s.job["id"] for s in subs if s.job is not None)
    rows = {j.id: j for j in db.scalars(select(Job)).all()}
    assert set(rows) == set(published)
    assert all(r.status == JobStatus.queued for r in rows.values())


def test_a_batch_that_fails_before_its_commit_keeps_nothing(app, db, auth_a, ds_id, published,
                                                           monkeypatch) -> None:  # noqa: ANN001
    def broken(*_args: object, **_kw: object) -> None:
        raise OperationalError("INSERT", {}, Exception("database gone"))

    subs = _subs(app, tenant_id(db), [small_spec(ds_id)] * 3)
    monkeypatch.setattr(Session, "flush", broken)
    commit_batch(subs)
    monkeypatch.undo()
    assert [(s.job, s.error) for s in subs] == [(None, None)] * 3
    assert published == [] and db.scalar(select(func.count()).select_from(Job)) == 0


def test_a_failed_commit_is_every_accepted_submissions_error(app, db, auth_a, ds_id,
                                                            published) -> None:  # noqa: ANN001
    factory = app.state.sessionmaker
    failure = OperationalError("COMMIT", {}, Exception("connection lost"))

    def failing_commit() -> Session:
        session = factory()

        def commit() -> None:
            raise failure

        session.commit = commit  # type: ignore[method-assign]
        return session

    subs = _subs(app, tenant_id(db), [small_spec(ds_id), small_spec("no-such-dataset")])
    for sub in subs:
        sub.factory = failing_commit  # type: ignore[assignment]
    commit_batch(subs)
    assert (subs[0].job, subs[0].error) == (None, failure)  # may have committed: a 500
    assert (subs[1].job, subs[1].error) == (None, None)  # refused: the route answers it
    assert published == []


def test_the_lane_answers_a_failed_commit_with_the_500_an_error_gets(app, auth_a, ds_id,
                                                                    monkeypatch) -> None:  # noqa: ANN001
    with TestClient(app, raise_server_exceptions=False) as client:
        client.get("/v1/jobs", headers=auth_a)

        def fail(subs: list[Submission]) -> list[str]:
            for sub in subs:
                sub.error = RuntimeError("commit lost")
            return []

        monkeypatch.setattr("drtrain.jobs.submit_batch.commit_jobs", fail)
        resp = client.post("/v1/jobs", json=small_spec(ds_id), headers=auth_a)
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/problem+json"


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
    service.publish_jobs(settings, ["j1", "j2", "j3", "j4"])  # never raises
    assert one == ["j1", "j2"]  # j4 is left to the reaper, as j3 is


def test_the_batcher_answers_everyone_even_when_a_batch_raises(monkeypatch) -> None:
    delivered: list[Submission] = []

    def explode(_subs: list[Submission]) -> list[str]:
        raise RuntimeError("bug")

    monkeypatch.setattr("drtrain.jobs.submit_batch.commit_jobs", explode)
    batcher = SubmitBatcher(delivered.extend, idle_seconds=0.05)
    subs = [Submission(None, None, "t", None) for _ in range(3)]  # type: ignore[arg-type]
    for sub in subs:
        batcher.submit(sub)
    for _ in range(500):
        if len(delivered) == 3:
            break
        time.sleep(0.01)
    assert sorted(map(id, delivered)) == sorted(map(id, subs))
    assert all(s.job is None for s in subs)


def test_the_batcher_answers_before_it_publishes_and_drain_waits_for_both(monkeypatch) -> None:  # noqa: ANN001
    events: list[str] = []
    publishing = threading.Event()
    release = threading.Event()

    def commit(subs: list[Submission]) -> list[str]:
        for n, sub in enumerate(subs):
            sub.job = {"id": f"j{n}"}
        return [f"j{n}" for n in range(len(subs))]

    def publish(_settings: object, job_ids: list[str]) -> None:
        events.append(f"publish {','.join(job_ids)}")
        publishing.set()
        release.wait(5)

    monkeypatch.setattr("drtrain.jobs.submit_batch.commit_jobs", commit)
    monkeypatch.setattr(service, "publish_jobs", publish)
    batcher = SubmitBatcher(lambda batch: events.append(f"answer {len(batch)}"),
                            idle_seconds=5)
    assert batcher.drain(0)  # nothing in hand
    batcher.submit(Submission(None, None, "t", None))  # type: ignore[arg-type]
    assert publishing.wait(5)
    assert events == ["answer 1", "publish j0"]  # answered first, published after
    assert not batcher.drain(0.2)  # the publish is still in hand
    release.set()
    assert batcher.drain(5)  # and waited for (the thread itself idles on)


# ---------------------------------------------------------------- broker, for real


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Settings, Engine, str]]:
    """SQLite and the filesystem broker, a committed tenant and its key."""
    settings = Settings(data_dir=tmp_path, database_url="", broker_url="", storage_url="",
                        environment="embedded", max_concurrent_jobs_per_tenant=5,
                        fashion_mnist_dir=tmp_path / "none")
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


def test_concurrent_lane_submits_never_overshoot_the_cap_on_sqlite(embedded,
                                                                   monkeypatch) -> None:  # noqa: ANN001
    settings, engine, key = embedded
    counting = Counting(monkeypatch)
    app = create_app(settings, engine=engine)
    statuses = asyncio.run(_submit_all(app, {"Authorization": f"Bearer {key}"}, 32))
    assert statuses == Counter({202: 5, 429: 27})
    with Session(engine) as s:
        owner = tenant_by_name(s, "local").id  # type: ignore[union-attr]
    assert _active(engine, owner) == 5
    assert counting.count >= 1


def test_concurrent_lane_submits_never_overshoot_the_cap_on_postgresql(
        settings: Settings, engine: Engine, store: ObjectStore, monkeypatch) -> None:  # noqa: ANN001
    name = f"lane-cap-{uuid.uuid4().hex[:8]}"
    with Session(engine) as s:
        key = create_key(s, name)
        owner = tenant_by_name(s, name).id  # type: ignore[union-attr]
        s.commit()
    counting = Counting(monkeypatch)
    app = create_app(settings.model_copy(update={"max_concurrent_jobs_per_tenant": 5}),
                     engine=engine, store=store)
    try:
        statuses = asyncio.run(_submit_all(app, {"Authorization": f"Bearer {key}"}, 32))
        assert statuses == Counter({202: 5, 429: 27})
        assert _active(engine, owner) == 5
        assert counting.count >= 1
    finally:
        with Session(engine) as s:
            s.execute(text("DELETE FROM jobs WHERE tenant_id = :t"), {"t": owner})
            s.delete(s.get(Tenant, owner))
            s.commit()


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
