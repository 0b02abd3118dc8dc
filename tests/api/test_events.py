"""GET /v1/jobs/{id}/events: Server-Sent Events with status and metric frames."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from api import events
from drtrain.kit.models import JobStatus, MetricPoint
from tests.api.test_jobs import add_job, add_points, tenant_id

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def fast_polls(app) -> None:  # noqa: ANN001
    app.state.sse_poll_seconds = 0.01
    app.state.sse_keepalive_seconds = 0.03


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
    """A fake worker advances the job between polls (in the poller's thread, so the test's
    single database connection is never used from two threads at once)."""
    job = add_job(db, tenant_id(db), JobStatus.running)
    real_poll = events._poll
    polls = {"n": 0}

    def poll_with_worker(factory, tenant, job_id, after_seq):  # noqa: ANN001, ANN202
        polls["n"] += 1
        with factory() as s:
            if polls["n"] == 6:
                s.add(MetricPoint(job_id=job_id, seq=1, attempt=1, phase="finetune", layer=None,
                                  layer_key=-1, epoch=0, name="train_loss", value=0.7))
                s.execute(text("UPDATE jobs SET progress = 0.5 WHERE id = :id"), {"id": job_id})
            if polls["n"] == 9:
                s.execute(text("UPDATE jobs SET status = 'succeeded', progress = 1 "
                               "WHERE id = :id"), {"id": job_id})
            s.commit()
        return real_poll(factory, tenant, job_id, after_seq)

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
