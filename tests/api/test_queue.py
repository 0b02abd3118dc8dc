"""A tenant's running cap and the queue behind it: submits past the cap are accepted and wait
in submit order, are dispatched one per freed slot, and only a full queue answers 429."""
from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from drtrain.jobs import lifecycle, queue
from drtrain.kit.models import Job, JobStatus
from tests.factories import add_job, small_spec, tenant_id

SPEC = small_spec("builtin:digits")


@pytest.fixture
def capped(app):  # noqa: ANN001, ANN201
    """Two running slots and two queue places per tenant."""
    app.state.settings = app.state.settings.model_copy(update={
        "max_concurrent_jobs_per_tenant": 2, "max_queued_jobs_per_tenant": 2})
    return app.state.settings


def _submit(client, auth, **top) -> dict:  # noqa: ANN001
    resp = client.post("/v1/jobs", json={**SPEC, **top}, headers=auth)
    assert resp.status_code == 202, resp.text
    return resp.json()


def _published_ids(published) -> list[str]:  # noqa: ANN001
    return [job_id for job_id, _ in published]


def test_submits_past_the_cap_wait_and_only_a_full_queue_answers_429(
        capped, client, db, auth_a, published) -> None:
    add_job(db, tenant_id(db), JobStatus.running)
    add_job(db, tenant_id(db), JobStatus.succeeded)  # an ended job holds no slot
    first = _submit(client, auth_a)
    waiting = [_submit(client, auth_a, seed=n) for n in (1, 2)]

    assert first["dispatched_at"] is not None
    assert all(job["status"] == "queued" and job["dispatched_at"] is None for job in waiting)
    assert _published_ids(published) == [first["id"]]  # a waiting job has no message

    full = client.post("/v1/jobs", json={**SPEC, "seed": 3}, headers=auth_a)
    assert full.status_code == 429
    assert full.headers["content-type"] == "application/problem+json"
    assert int(full.headers["retry-after"]) > 0
    assert "queue is full" in full.json()["detail"]
    assert db.scalar(select(Job.id).where(Job.spec["seed"].as_integer() == 3)) is None

    queue_now = client.get("/v1/queue", headers=auth_a).json()
    assert queue_now["running_limit"] == 2 and queue_now["queued_limit"] == 2
    assert (queue_now["dispatched"], queue_now["waiting"]) == (2, 2)
    assert queue_now["items"] == [{"position": 1, "job_id": waiting[0]["id"]},
                                  {"position": 2, "job_id": waiting[1]["id"]}]


def test_a_freed_slot_goes_to_the_oldest_waiting_job_once(capped, client, db, auth_a,
                                                          published) -> None:
    first, second = _submit(client, auth_a), _submit(client, auth_a, seed=1)
    waiting = [_submit(client, auth_a, seed=n) for n in (2, 3)]
    assert _published_ids(published) == [first["id"], second["id"]]

    assert client.post(f"/v1/jobs/{first['id']}/cancel", headers=auth_a).status_code == 202
    assert _published_ids(published) == [first["id"], second["id"], waiting[0]["id"]]
    assert published[-1][1]  # the message only once the cancel has committed
    head = client.get("/v1/queue", params={"job_id": waiting[1]["id"]}, headers=auth_a).json()
    assert head["position"] == 1 and head["waiting"] == 1

    # Cancelling again gives nothing back: the slot was passed on once.
    assert client.post(f"/v1/jobs/{first['id']}/cancel", headers=auth_a).status_code == 200
    assert _published_ids(published)[-1] == waiting[0]["id"]
    assert len(published) == 3


def test_cancelling_a_waiting_job_frees_no_slot_and_moves_the_line_up(
        capped, client, db, auth_a, published) -> None:
    _submit(client, auth_a), _submit(client, auth_a, seed=1)
    ahead, behind = _submit(client, auth_a, seed=2), _submit(client, auth_a, seed=3)
    before = len(published)

    assert client.post(f"/v1/jobs/{ahead['id']}/cancel", headers=auth_a).status_code == 202
    assert len(published) == before
    place = client.get("/v1/queue", params={"job_id": behind["id"]}, headers=auth_a).json()
    assert place["position"] == 1 and place["dispatched"] == 2
    gone = client.get("/v1/queue", params={"job_id": ahead["id"]}, headers=auth_a).json()
    assert gone["position"] is None


def test_new_submits_never_overtake_waiting_jobs(capped, client, db, auth_a,
                                                 published) -> None:
    """A slot freed while jobs wait (here the cap raised) goes to the oldest of them, not to
    the submit that noticed it."""
    _submit(client, auth_a), _submit(client, auth_a, seed=1)
    waiting = _submit(client, auth_a, seed=2)
    client.app.state.settings = capped.model_copy(update={"max_concurrent_jobs_per_tenant": 3})
    newcomer = _submit(client, auth_a, seed=3)

    assert newcomer["dispatched_at"] is None
    assert _published_ids(published)[-1] == waiting["id"]


def test_another_tenants_queue_is_its_own(capped, client, db, auth_a, auth_b,
                                          published) -> None:
    for n in range(4):
        _submit(client, auth_a, seed=n)
    mine = _submit(client, auth_b)
    assert mine["dispatched_at"] is not None  # tenant a's backlog takes none of b's slots
    theirs = client.get("/v1/queue", headers=auth_a).json()["items"][0]["job_id"]
    assert client.get("/v1/queue", params={"job_id": theirs}, headers=auth_a).json()["position"]
    # another tenant's job, or none at all: 404, as for every other read of an id
    for job_id in (theirs, "0" * 32):
        resp = client.get("/v1/queue", params={"job_id": job_id}, headers=auth_b)
        assert resp.status_code == 404 and resp.json()["type"].endswith("/not-found")
    # one of yours that is not waiting: no place
    assert client.get("/v1/queue", params={"job_id": mine["id"]},
                      headers=auth_b).json()["position"] is None


def test_a_waiting_job_cannot_be_claimed(capped, client, db: Session, auth_a,
                                         published) -> None:
    _submit(client, auth_a), _submit(client, auth_a, seed=1)
    waiting = _submit(client, auth_a, seed=2)
    assert lifecycle.claim(db, waiting["id"], "w1", 60) is None
    assert db.get(Job, waiting["id"]).status == JobStatus.queued


def test_the_reapers_refill_serves_tenants_in_turn(capped, client, db: Session, auth_a,
                                                   auth_b, published) -> None:
    a = [_submit(client, auth_a, seed=n)["id"] for n in range(4)]
    b = [_submit(client, auth_b, seed=n)["id"] for n in range(4)]
    raised = capped.model_copy(update={"max_concurrent_jobs_per_tenant": 4})

    dispatched = queue.refill_all(db, raised)

    a_first = tenant_id(db) < tenant_id(db, "tenant-b")
    pairs = zip(a[2:], b[2:]) if a_first else zip(b[2:], a[2:])
    assert dispatched == [job_id for pair in pairs for job_id in pair]
    assert queue.refill_all(db, raised) == []  # each dispatched once


def test_a_sweep_shares_the_running_slots(capped, client, db: Session, auth_a,
                                          published) -> None:
    capped_sweeps = capped.model_copy(update={"max_sweep_jobs_per_tenant": 10})
    client.app.state.settings = capped_sweeps
    waiting = [_submit(client, auth_a, seed=n)["id"] for n in range(3)][2]
    resp = client.post("/v1/sweeps", json={"base": SPEC, "grid": {"seed": [10, 11, 12]}},
                       headers=auth_a)
    assert resp.status_code == 202, resp.text
    children = [c["job_id"] for c in resp.json()["children"]]
    rows = {j.id: j for j in db.scalars(select(Job).where(Job.id.in_([waiting, *children])))}
    assert all(rows[c].dispatched_at is None for c in children)
    place = client.get("/v1/queue", headers=auth_a).json()
    assert [item["job_id"] for item in place["items"]] == [waiting, *children]
