"""Nothing of a body is read before its key is checked, and no body passes its route's limit
(api/body_gate.py): driven at the ASGI level, counting what the app takes of the body."""
from __future__ import annotations

import json
from typing import Any

import pytest

from api.body_gate import BODY_LIMITS, DEFAULT_LIMIT, declared_routes

CHUNK = 64 * 1024
JOB = "0123456789abcdef0123456789abcdef"


class Body:
    """A body of ``total`` bytes handed over in chunks, counting how many were taken."""

    def __init__(self, total: int, chunk: bytes = b" " * CHUNK) -> None:
        self.total, self.chunk, self.taken = total, chunk, 0

    async def receive(self) -> dict[str, Any]:
        if self.taken >= self.total:
            return {"type": "http.disconnect"}
        piece = self.chunk[:self.total - self.taken]
        self.taken += len(piece)
        return {"type": "http.request", "body": piece, "more_body": self.taken < self.total}


def call(client, path: str, body: Body, headers: dict[str, str] | None = None,  # noqa: ANN001
         content_length: bool = True) -> tuple[int, dict[str, Any]]:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw.append((b"content-type", b"application/json"))
    raw.append((b"content-length", str(body.total).encode()) if content_length
               else (b"transfer-encoding", b"chunked"))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "headers": raw,
             "client": ("10.9.8.7", 50000), "server": ("testserver", 80)}
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await client.app(scope, body.receive, send)

    client.portal.call(run)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload) if payload else {}


@pytest.mark.parametrize("path", ["/v1/jobs", f"/v1/jobs/{JOB}/predict", "/v1/sweeps"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-key"}])
def test_a_body_without_a_valid_key_is_never_read(client, path, headers) -> None:  # noqa: ANN001
    body = Body(8 * 1024 * 1024)
    status, problem = call(client, path, body, headers)
    assert status == 401, problem
    assert problem["type"] == "https://drtrain.dev/problems/unauthorized"
    assert body.taken == 0


@pytest.mark.parametrize("path, template, limit", [
    ("/v1/jobs", "/v1/jobs", BODY_LIMITS[("POST", "/v1/jobs")]),
    (f"/v1/jobs/{JOB}/cancel", "/v1/jobs/{job_id}/cancel", DEFAULT_LIMIT)])
def test_a_declared_length_over_the_limit_is_refused_before_reading(  # noqa: ANN001
        client, auth_a, path, template, limit) -> None:  # noqa: ANN001
    body = Body(limit + 1)
    status, problem = call(client, path, body, auth_a)
    assert status == 413 and body.taken == 0
    assert problem["detail"].endswith(f"over the {limit}-byte limit of POST {template}")


@pytest.mark.parametrize("path, limit", [
    ("/v1/jobs", BODY_LIMITS[("POST", "/v1/jobs")]),
    (f"/v1/jobs/{JOB}/predict", BODY_LIMITS[("POST", "/v1/jobs/{job_id}/predict")]),
    ("/v1/sweeps", BODY_LIMITS[("POST", "/v1/sweeps")])])
def test_a_streamed_body_stops_at_the_limit(client, auth_a, path, limit) -> None:  # noqa: ANN001
    body = Body(limit * 4)
    status, problem = call(client, path, body, auth_a, content_length=False)
    assert status == 413, problem
    assert problem["status"] == 413 and "limit" in problem["detail"]
    assert body.taken <= limit + CHUNK  # never read past the chunk that crossed the limit


def test_a_body_within_the_limit_still_reaches_its_route(client, auth_a) -> None:  # noqa: ANN001
    spec = json.dumps({"dataset_id": "builtin:digits", "finetune": {"epochs": 1}}).encode()
    status, job = call(client, "/v1/jobs", Body(len(spec), spec), auth_a, content_length=False)
    assert status == 202, job


def test_every_limit_names_a_route(app) -> None:  # noqa: ANN001
    assert set(BODY_LIMITS) <= declared_routes(app)
