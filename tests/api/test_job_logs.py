"""GET /v1/jobs/{id}/logs: an attempt's lines as text, `attempt` and `since`."""
from __future__ import annotations

import pytest

from drtrain.jobs import logs
from drtrain.kit.models import JobStatus
from tests.factories import add_job, tenant_id


@pytest.fixture
def job(db, auth_a):  # noqa: ANN001, ANN201
    """A job on its second attempt: three lines from the first, two so far from the second."""
    row = add_job(db, tenant_id(db), JobStatus.running, attempt=2)
    logs.append(db, row.id, 1, 0, ["one", "two", "Traceback (most recent call last):"])
    logs.append(db, row.id, 2, 0, ["again", "  indented"])
    db.commit()
    return row


def _get(client, auth, job_id: str, **params):  # noqa: ANN001, ANN202
    return client.get(f"/v1/jobs/{job_id}/logs", headers=auth, params=params)


def test_the_latest_attempt_by_default_as_plain_text(client, auth_a, job) -> None:  # noqa: ANN001
    resp = _get(client, auth_a, job.id)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.text == "again\n  indented\n"


def test_an_earlier_attempt_by_number(client, auth_a, job) -> None:  # noqa: ANN001
    assert _get(client, auth_a, job.id, attempt=1).text == \
        "one\ntwo\nTraceback (most recent call last):\n"


def test_since_skips_the_lines_already_read(client, auth_a, job, db) -> None:  # noqa: ANN001
    assert _get(client, auth_a, job.id, attempt=1, since=2).text == \
        "Traceback (most recent call last):\n"
    assert _get(client, auth_a, job.id, attempt=1, since=3).text == ""
    assert _get(client, auth_a, job.id, since=99).text == ""
    logs.append(db, job.id, 2, 2, ["later"])
    db.commit()
    assert _get(client, auth_a, job.id, since=2).text == "later\n"


def test_a_job_not_yet_run_has_no_lines(client, auth_a, db) -> None:  # noqa: ANN001
    queued = add_job(db, tenant_id(db), JobStatus.queued)
    resp = _get(client, auth_a, queued.id)
    assert resp.status_code == 200 and resp.text == ""


@pytest.mark.parametrize("params, field", [
    ({"attempt": 0}, "attempt"), ({"attempt": "latest"}, "attempt"),
    ({"since": -1}, "since"), ({"since": "x"}, "since"), ({"since": 2**31}, "since")])
def test_bad_values_are_named(client, auth_a, job, params, field) -> None:  # noqa: ANN001
    resp = _get(client, auth_a, job.id, **params)
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert [e["loc"][-1] for e in resp.json()["errors"]] == [field]


def test_an_attempt_the_job_has_not_had_is_404(client, auth_a, job) -> None:  # noqa: ANN001
    resp = _get(client, auth_a, job.id, attempt=3)
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["detail"] == f"job {job.id} has no attempt 3 (its attempts are 1 to 2)"


def test_another_tenants_job_is_404(client, auth_b, job) -> None:  # noqa: ANN001
    resp = _get(client, auth_b, job.id, attempt=1)
    assert resp.status_code == 404 and "one" not in resp.text


def test_the_document_describes_the_route(client) -> None:  # noqa: ANN001
    op = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/logs"]["get"]
    assert op["operationId"] == "getJobLogs"
    assert "text/plain" in op["responses"]["200"]["content"]
    assert {p["name"] for p in op["parameters"]} == {"job_id", "attempt", "since"}
    assert {"401", "404", "422", "429", "500"} <= set(op["responses"])
