"""Liveness, readiness, metrics, the dashboard and problem+json for unknown routes."""
from __future__ import annotations

from drtrain.kit.models import Job, JobStatus
from drtrain.kit.settings import Settings
from drtrain.tenants.keys import create_key


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_ok_when_everything_reachable(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.text
    assert resp.json()["checks"] == {"database": "ok", "object_store": "ok", "broker": "ok",
                                     "storage": "ok"}


def test_readyz_503_when_broker_unreachable(app, client):
    # Port 9 (discard) is closed on the test machine, so the Redis ping must fail.
    app.state.settings = app.state.settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["broker"].startswith("unreachable")
    assert resp.json()["checks"]["database"] == "ok"


def test_metrics_counts_requests_and_jobs(client, db):
    tenant_key = create_key(db, "metrics-tenant")
    assert tenant_key
    tenant_id = db.query(Job.tenant_id).first()  # no jobs yet in this transaction
    assert tenant_id is None
    from drtrain.tenants.repository import tenant_by_name

    tenant = tenant_by_name(db, "metrics-tenant")
    for status in (JobStatus.queued, JobStatus.queued, JobStatus.running):
        db.add(Job(tenant_id=tenant.id, dataset_id="builtin:digits", spec={}, status=status))
    db.flush()
    client.get("/healthz")
    body = client.get("/metrics").text
    assert 'drtrain_http_requests_total{method="GET",route="/healthz",status="200"} 1' in body
    assert 'drtrain_jobs{status="queued"} 2' in body
    assert 'drtrain_jobs{status="running"} 1' in body
    assert "drtrain_queue_depth 2" in body
    assert 'drtrain_job_duration_seconds_bucket{le="+Inf"} 0' in body


def test_unknown_route_is_problem_json(client):
    resp = client.get("/v1/nothing-here")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["status"] == 404
    # the same type as an unknown id's 404
    assert resp.json()["type"] == "https://drtrain.dev/problems/not-found"
    assert resp.json()["detail"] == "nothing at GET /v1/nothing-here"


def test_dashboard_served(client):
    resp = client.get("/")
    assert resp.status_code == 200
    assert "drtrain" in resp.text and "/v1/jobs" in resp.text


def test_metrics_label_routes_by_template_not_raw_path(client, auth_a):
    client.get("/v1/datasets/abc123", headers=auth_a)
    body = client.get("/metrics").text
    assert 'route="/v1/datasets/{dataset_id}",status="404"} 1' in body
    assert "abc123" not in body


def _app_with_failing_routes(app):  # noqa: ANN001, ANN202
    from fastapi import Query

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret-token-in-exception")

    @app.get("/typed")
    def typed(n: int = Query(ge=1)) -> dict[str, int]:
        return {"n": n}

    return app


def test_unexpected_error_is_500_problem_without_details(app):
    from fastapi.testclient import TestClient

    _app_with_failing_routes(app)
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/boom")
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["detail"] == "internal server error"
    assert "secret-token" not in resp.text


def test_validation_error_is_422_problem_with_errors(app, client):
    _app_with_failing_routes(app)
    resp = client.get("/typed", params={"n": "zero"})
    assert resp.status_code == 422
    body = resp.json()
    assert body["type"].endswith("/invalid")
    assert body["errors"][0]["loc"] == ["query", "n"]
    assert "query.n" in body["detail"]


def test_a_rule_of_our_own_reads_without_pydantics_prefix(client, auth_a):
    resp = client.post("/v1/jobs", json={"dataset_id": "builtin:digits", "pretrain": None,
                                         "finetune": None}, headers=auth_a)
    assert resp.status_code == 422
    assert resp.json()["detail"] == "body: pretrain and finetune cannot both be null"
    assert resp.json()["errors"][0]["msg"] == "pretrain and finetune cannot both be null"


def test_wrong_method_is_405_problem(client):
    resp = client.put("/healthz")
    assert resp.status_code == 405
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["status"] == 405


def test_the_api_makes_its_bucket_and_readyz_names_a_missing_one(app, settings, engine,
                                                                 s3_endpoint) -> None:  # noqa: ANN001
    """A fresh S3 server has no bucket: the API creates it at start-up. One deleted later is
    named by /readyz as missing, not "unreachable"."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    s3_settings = settings.model_copy(update={
        "storage_url": "s3://drtrain-ready/objects", "s3_endpoint_url": s3_endpoint,
        "s3_access_key_id": "test", "s3_secret_access_key": Settings(
            s3_secret_access_key="test").s3_secret_access_key})
    s3_app = create_app(s3_settings, engine=engine)
    with TestClient(s3_app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        s3_app.state.store.client.delete_bucket(Bucket="drtrain-ready")
        resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["object_store"] == "bucket 'drtrain-ready' does not exist"
    assert "object_store bucket 'drtrain-ready' does not exist" in resp.json()["detail"]
