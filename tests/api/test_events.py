"""GET /v1/jobs/{id}/events: Server-Sent Events with status and metric frames."""
from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from api import events, reads
from drtrain.kit.models import JobStatus, MetricPoint
from tests.factories import add_job, add_points, tenant_id

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def fast_polls(app) -> None:  # noqa: ANN001
    app.state.events = events.EventHub(poll_seconds=0.01, keepalive_seconds=0.03)


def parse(stream: str) -> list[dict]:
    """SSE frames -> [{"event", "id", "data"} | {"comment"}]."""
    frames = []
    for block in stream.split("\n\n"):
        if not block.strip():
            continue
        frame: dict = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                frame["comment"] = line[1:].strip()
            else:
                field, _, value = line.partition(": ")
                frame[field] = json.loads(value) if field == "data" else value
        frames.append(frame)
    return frames


def read(client, url: str, headers: dict) -> tuple[int, str, list[dict]]:  # noqa: ANN001
    with client.stream("GET", url, headers=headers) as resp:
        body = "".join(resp.iter_text())
        return resp.status_code, resp.headers["content-type"], parse(body)


def test_finished_job_streams_metrics_then_terminal_status(client, db, auth_a) -> None:
    job = add_job(db, tenant_id(db), JobStatus.succeeded, progress=1.0)
    add_points(db, job, 3)
    status, ctype, frames = read(client, f"/v1/jobs/{job.id}/events", auth_a)
    frames = [f for f in frames if "comment" not in f]  # keep-alives when the machine is slow
    assert status == 200 and ctype.startswith("text/event-stream")
    assert [f.get("event") for f in frames] == ["metric", "metric", "metric", "status"]
    assert [f["id"] for f in frames[:3]] == ["1", "2", "3"]
    assert frames[0]["data"]["name"] == "reconstruction_error" and frames[0]["data"]["seq"] == 1
    assert frames[-1]["data"]["id"] == job.id and frames[-1]["data"]["status"] == "succeeded"


def test_last_event_id_resumes_after_that_seq(client, db, auth_a) -> None:
    job = add_job(db, tenant_id(db), JobStatus.failed)
    add_points(db, job, 4)
    _, _, frames = read(client, f"/v1/jobs/{job.id}/events", {**auth_a, "Last-Event-ID": "2"})
    assert [f.get("id") for f in frames if f.get("event") == "metric"] == ["3", "4"]
    assert frames[-1]["event"] == "status"


def test_live_job_streams_changes_keepalives_and_ends_when_terminal(client, db, auth_a,
                                                                    monkeypatch) -> None:
    """A fake worker advances the job between the feed's polls (inside the poll's own short
    session, so the test's single database connection is never used from two threads)."""
    job = add_job(db, tenant_id(db), JobStatus.running)
    real_poll = events._poll
    polls = {"n": 0}

    def poll_with_worker(factory, *, tenant_id, job_id, after):  # noqa: ANN001, ANN202
        polls["n"] += 1
        with factory() as session:
            if polls["n"] == 6:
                session.add(MetricPoint(job_id=job_id, seq=1, attempt=1, phase="finetune",
                                        layer=None, layer_key=-1, epoch=0, name="train_loss",
                                        value=0.7))
                session.execute(text("UPDATE jobs SET progress = 0.5 WHERE id = :id"),
                                {"id": job_id})
            if polls["n"] == 9:
                session.execute(text("UPDATE jobs SET status = 'succeeded', progress = 1 "
                                     "WHERE id = :id"), {"id": job_id})
            session.commit()
        return real_poll(factory, tenant_id=tenant_id, job_id=job_id, after=after)

    monkeypatch.setattr(events, "_poll", poll_with_worker)
    _, _, frames = read(client, f"/v1/jobs/{job.id}/events", auth_a)
    kinds = [f.get("event") or f.get("comment") for f in frames]
    statuses = [f["data"]["status"] for f in frames if f.get("event") == "status"]
    assert statuses == ["running", "running", "succeeded"]
    assert [f["data"]["progress"] for f in frames if f.get("event") == "status"] == [0.0, 0.5, 1.0]
    assert "keep-alive" in kinds[:kinds.index("metric")]
    assert kinds[-1] == "status" and kinds.count("metric") == 1
    assert polls["n"] == 9  # the stream ended right after the terminal status


def test_events_of_other_tenant_are_404(client, db, auth_a, auth_b) -> None:
    job = add_job(db, tenant_id(db), JobStatus.succeeded)
    resp = client.get(f"/v1/jobs/{job.id}/events", headers=auth_b)
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"


def test_a_long_backlog_is_sent_in_pages_then_the_status(client, db, auth_a,
                                                         monkeypatch) -> None:  # noqa: ANN001
    """A watcher behind the feed's window catches up PAGE points at a time, each read in its
    own short session; within the window it is served from memory."""
    monkeypatch.setattr(events, "PAGE", 4)
    monkeypatch.setattr(events, "WINDOW", 2)  # the feed holds points 9 and 10
    pages = []
    real_page = events._page

    def counting_page(factory, *, job_id, after):  # noqa: ANN001, ANN202
        pages.append(after)
        return real_page(factory, job_id=job_id, after=after)

    monkeypatch.setattr(events, "_page", counting_page)
    job = add_job(db, tenant_id(db), JobStatus.succeeded)
    add_points(db, job, 10)
    _, _, frames = read(client, f"/v1/jobs/{job.id}/events", {**auth_a, "Last-Event-ID": "1"})
    assert [int(f["id"]) for f in frames if f.get("event") == "metric"] == list(range(2, 11))
    assert frames[-1]["event"] == "status" and frames[-1]["data"]["status"] == "succeeded"
    assert pages == [1, 5]  # two pages of at most 4 points (2-9), then 10 from memory
    pages.clear()
    _, _, frames = read(client, f"/v1/jobs/{job.id}/events", {**auth_a, "Last-Event-ID": "8"})
    assert [int(f["id"]) for f in frames if f.get("event") == "metric"] == [9, 10]
    assert pages == []  # the feed's window held the whole backlog


def test_streams_per_tenant_are_capped_and_a_finished_stream_frees_its_slot(
        app, client, db, auth_a, auth_b) -> None:  # noqa: ANN001
    from api.limits import TenantSlots

    app.state.stream_slots = slots = TenantSlots(2, "event streams")
    owner = tenant_id(db)
    job = add_job(db, owner, JobStatus.succeeded)
    slots.acquire(owner)
    slots.acquire(owner)  # two streams of tenant A are open
    refused = client.get(f"/v1/jobs/{job.id}/events", headers=auth_a)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert refused.headers["content-type"] == "application/problem+json"
    slots.release(owner)
    status, _, frames = read(client, f"/v1/jobs/{job.id}/events", auth_a)
    assert status == 200 and frames[-1]["event"] == "status"
    assert slots.held(owner) == 1  # the finished stream gave its slot back
    add_job(db, tenant_id(db, "tenant-b"), JobStatus.succeeded)  # B is not limited by A


class FakeReads:
    """Answers the feed's polls (``JobReads.run`` of ``events._poll`` or ``events._page``)
    from memory and counts them."""

    def __init__(self, job: dict, points: int) -> None:
        self.job, self.points, self.polls = job, points, 0

    def _frames(self, after: int) -> list:
        seqs = list(range(after + 1, min(self.points, after + events.PAGE) + 1))
        n = len(seqs)
        return events._frames([seqs, ["pretrain"] * n, [0] * n, seqs, ["x"] * n, [0.5] * n,
                               ["2026-01-01T00:00:00Z"] * n])

    async def run(self, read):  # noqa: ANN001, ANN201
        after = read.keywords["after"]
        if read.func is events._poll:
            self.polls += 1
            status = reads.job_body(self.job).decode()
            terminal = JobStatus(self.job["status"]).terminal
            if after is None:
                return status, terminal, [], self.points
            return status, terminal, self._frames(after), None
        assert read.func is events._page
        return self._frames(after)


def test_one_poller_serves_every_subscriber_of_a_job() -> None:
    """200 streams of one job: the database is polled by one feed, not by each stream."""
    job = {**JOB_ROW, "status": "running"}
    db = FakeReads(job, points=3)
    hub = events.EventHub(poll_seconds=0.01, keepalive_seconds=60)

    async def scenario() -> list[list[str]]:
        async def watch() -> list[str]:
            chunks = [chunk async for chunk in hub.stream(db, "t", "j", 0)]  # type: ignore[arg-type]
            return [f for f in b"".join(chunks).decode().split("\n\n") if f]

        tasks = [asyncio.create_task(watch()) for _ in range(200)]
        await asyncio.sleep(0.2)  # about 20 poll intervals with every stream open
        assert len(hub.feeds) == 1 and hub.feeds[("t", "j")].subscribers == 200
        polls_while_open = db.polls
        db.points = 5
        db.job = {**job, "status": "succeeded"}
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert polls_while_open < 60, polls_while_open  # ~20, not 200 x 20
        return results

    results = asyncio.run(scenario())
    assert not hub.feeds  # the feed stopped with the job
    for frames in results:
        assert [f.split("\n", 1)[0] for f in frames if "event: metric" in f] == [
            f"id: {s}" for s in range(1, 6)]
        assert '"status":"succeeded"' in frames[-1]


JOB_ROW = {"id": "j", "status": "running", "status_reason": None, "phase": None, "layer": None,
           "epoch": None, "progress": 0.0, "attempt": 1, "max_attempts": 3,
           "cancel_requested": False, "dataset_id": "builtin:digits", "sweep_id": None,
           "created_at": datetime(2026, 1, 1, tzinfo=UTC), "dispatched_at": None, "started_at": None,
           "finished_at": None, "heartbeat_at": None, "result": None, "spec": {}}


def test_polls_that_find_nothing_new_wake_no_stream(monkeypatch) -> None:  # noqa: ANN001
    """100 streams on a job that does not change: the feed polls about 20 times but wakes
    its streams once (the first status), then only for keep-alives. Before, every poll woke
    every stream (and each stream also ran a keep-alive timer of its own)."""
    db = FakeReads({**JOB_ROW, "status": "running"}, points=2)
    hub = events.EventHub(poll_seconds=0.01, keepalive_seconds=0.12)
    wakes = {"n": 0}
    real_announce = events.JobFeed._announce

    def counting_announce(self) -> None:  # noqa: ANN001
        wakes["n"] += 1
        real_announce(self)

    monkeypatch.setattr(events.JobFeed, "_announce", counting_announce)

    async def scenario() -> list[bytes]:
        async def watch() -> list[bytes]:
            return [chunk async for chunk in hub.stream(db, "t", "j", 0)]  # type: ignore[arg-type]

        started = time.monotonic()
        tasks = [asyncio.create_task(watch()) for _ in range(100)]
        await asyncio.sleep(0.3)  # about 25 polls, two or three keep-alive periods
        while db.polls < 15:  # a slow machine: wait for the polls, not for the clock
            await asyncio.sleep(0.01)
        idle_polls, idle_wakes = db.polls, wakes["n"]
        elapsed = time.monotonic() - started
        db.job = {**db.job, "status": "succeeded"}
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        # The first status, then one wake-up per keep-alive period (0.11 s at most), not one
        # per poll.
        assert 2 <= idle_wakes <= 2 + elapsed / 0.11 < idle_polls, (idle_wakes, idle_polls)
        return [b"".join(chunks) for chunks in results]

    for stream in asyncio.run(scenario()):
        text = stream.decode()
        assert text.count("event: metric") == 2 and text.count(": keep-alive") >= 1
        assert text.rstrip().endswith("}") and '"status":"succeeded"' in text.split("\n\n")[-2]


def test_streams_opening_at_once_share_one_existence_check() -> None:
    """500 watchers connecting together to a job nobody watched yet: one query says the job
    exists (or not) for all of them, not one each."""
    from drtrain.kit.errors import NotFound

    class CountingReads:
        def __init__(self) -> None:
            self.checks = 0

        async def run(self, read):  # noqa: ANN001, ANN201
            assert read.func is events._exists
            self.checks += 1
            await asyncio.sleep(0.05)  # the query in its thread
            if read.keywords["job_id"] != "j":
                raise NotFound("job not found")

    db = CountingReads()
    hub = events.EventHub(poll_seconds=0.01, keepalive_seconds=60)

    async def scenario() -> list[object]:
        found = await asyncio.gather(*(hub.check_exists(db, "t", "j") for _ in range(100)))
        missing = await asyncio.gather(*(hub.check_exists(db, "t", "gone") for _ in range(100)),
                                       return_exceptions=True)
        return [*found, *missing]

    results = asyncio.run(scenario())
    assert results[:100] == [None] * 100
    assert all(isinstance(r, NotFound) for r in results[100:])
    assert db.checks == 2 and not hub._checks  # one per job, forgotten once answered


def test_a_revoked_keys_stream_closes_with_an_error_frame(app, client, db, auth_a,  # noqa: ANN001
                                                          tenant_a_key, monkeypatch) -> None:
    """A fake worker adds a metric point at every poll, and the key is revoked mid-stream. No
    point made more than the key cache's TTL after the revoke is sent, and the stream ends
    with an ``error`` frame. (The job ends 2 s after the revoke, so the old code's stream,
    which never looked at the key again, ends too.) The key's lookup answers from the test's
    record of the revoke: the test's one database connection must not serve two threads."""
    from api import deps
    from drtrain.tenants.keys import KeyCache, tenant_ref_for_key

    ttl = 0.3
    app.state.key_cache = KeyCache(ttl)
    app.state.settings.auth_cache_seconds = ttl
    ref = tenant_ref_for_key(db, tenant_a_key)
    job = add_job(db, tenant_id(db), JobStatus.running)
    real_poll = events._poll
    made: dict[int, float] = {}  # seq -> when its point was written
    revoked_at: list[float] = []

    async def look_up_key(_state, _key):  # noqa: ANN001, ANN202
        return None if revoked_at else ref

    def poll_with_worker(factory, *, tenant_id, job_id, after):  # noqa: ANN001, ANN202
        with factory() as session:
            seq = len(made) + 1
            session.add(MetricPoint(job_id=job_id, seq=seq, attempt=1, phase="finetune",
                                    layer=None, layer_key=-1, epoch=seq, name="train_loss",
                                    value=0.5))
            made[seq] = time.monotonic()
            if seq == 20:
                revoked_at.append(time.monotonic())
            if revoked_at and time.monotonic() > revoked_at[0] + 2:
                session.execute(text("UPDATE jobs SET status = 'succeeded' WHERE id = :id"),
                                {"id": job_id})
            session.commit()
        time.sleep(0.01)
        return real_poll(factory, tenant_id=tenant_id, job_id=job_id, after=after)

    monkeypatch.setattr(deps, "look_up_key", look_up_key)
    monkeypatch.setattr(events, "_poll", poll_with_worker)
    _, _, frames = read(client, f"/v1/jobs/{job.id}/events", auth_a)
    sent = [f["data"]["seq"] for f in frames if f.get("event") == "metric"]
    late = [seq for seq in sent if made[seq] > revoked_at[0] + ttl + 0.2]
    assert sent and late == [], f"{len(late)} points made after the TTL were sent"
    assert frames[-1]["event"] == "error", frames[-3:]
    assert frames[-1]["data"]["status"] == 401
    assert "revoked" in frames[-1]["data"]["detail"]
