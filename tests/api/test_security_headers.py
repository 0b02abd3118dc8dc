"""Every response carries the security headers (api/security_headers.py), and /docs keeps no
key in the browser's storage."""
from __future__ import annotations

import re

import pytest

from api.security_headers import CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("method, path", [
    ("GET", "/"), ("GET", "/docs"), ("GET", "/redoc"), ("GET", "/docs-assets/swagger-init.js"),
    ("GET", "/openapi.json"), ("GET", "/healthz"), ("GET", "/v1/jobs"), ("GET", "/no-such-page"),
    ("POST", "/v1/jobs"), ("DELETE", "/healthz")])
def test_every_response_carries_the_security_headers(client, method, path) -> None:  # noqa: ANN001
    resp = client.request(method, path)
    assert resp.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"


def test_the_policy_forbids_framing_eval_and_other_hosts() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["frame-ancestors"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY
    assert "http" not in CONTENT_SECURITY_POLICY  # no other host, anywhere


def test_swagger_ui_does_not_persist_authorization(client) -> None:  # noqa: ANN001
    page = client.get("/docs").text
    init = client.get("/docs-assets/swagger-init.js").text
    assert "<script>" not in page  # no inline script: the policy would refuse it
    assert "SwaggerUIBundle(" in init
    # Swagger UI's default is off; the old page turned it on (a key kept in localStorage).
    assert not re.search(r"persistAuthorization\W+true", init + page)


def test_an_unexpected_errors_500_carries_them_too(app, auth_a, monkeypatch) -> None:  # noqa: ANN001
    """Starlette answers an error no handler takes outside every added middleware."""
    from fastapi.testclient import TestClient

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.job_reads, "page", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/v1/jobs?limit=3&status=queued", headers=auth_a)
    assert resp.status_code == 500
    assert resp.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert resp.headers["x-frame-options"] == "DENY"
