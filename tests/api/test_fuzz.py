"""Property-based fuzz of the HTTP API from its own OpenAPI document (schemathesis + hypothesis).

Each documented operation is fuzzed with schema-valid ("positive") and schema-invalid
("negative") requests, once with tenant A's valid key and once without a usable key.
Path ids are drawn either by schemathesis or from tenant A's real objects, so the fuzz
reaches past the 404 into the handlers (predict on a real model, cancel, download, ...).

Checks on every response: no 5xx; every 4xx is problem+json with type/title/status/detail;
without a key every ``/v1`` route answers 401 with a challenge; and the response conforms to
the documented schema (body, content type, status code).

Bounded and reproducible: few examples per operation, ``derandomize`` (same cases every run),
no example database, no shrinking (a failure prints the raw case, which is enough to replay).
schemathesis' own pytest loader (``from_fixture``) does not run under pytest 9, so the
operations are driven with ``as_strategy`` and ``@given`` inside ordinary tests.
"""
from __future__ import annotations

import base64
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.auth_limits import FailedAuthLimiter
from drtrain.kit.settings import Settings
from tests.factories import World, seed_tenant, tenant_id

MAX_EXAMPLES = int(os.environ.get("DRTRAIN_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck))
PROBLEM_FIELDS = {"type": str, "title": str, "status": int, "detail": str}


def _documented_operations() -> list[tuple[str, str, bool]]:
    """(METHOD, path, takes input) for every operation in the OpenAPI document. Building
    the app touches nothing (no connection, no folder), so this is safe at collection."""
    doc = create_app(Settings(data_dir=Path("/nonexistent"), environment="test")).openapi()
    return [(method.upper(), path, bool(op.get("parameters") or op.get("requestBody")))
            for path, item in doc["paths"].items() for method, op in item.items()]


OPERATIONS = _documented_operations()
# Negative cases need something to make invalid; an operation without input has none.
CASES = [(m, p, mode) for m, p, has_input in OPERATIONS
         for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if has_input or mode is GenerationMode.POSITIVE]


def _real_ids(world: World, path: str) -> list[dict[str, str]]:
    """Path parameters naming tenant A's objects. The event stream of a job that is not
    terminal never ends, so that route gets the succeeded job only."""
    if "{dataset_id}" in path:
        return [{"dataset_id": world.dataset_id}]
    if "{sweep_id}" in path:
        return [{"sweep_id": world.sweep_id}]
    if "{job_id}" in path:
        if path.endswith("/events"):
            return [{"job_id": world.job_id}]
        return [{"job_id": world.job_id}, {"job_id": world.queued_job_id}]
    return []


def _strategy(operation: Any, mode: GenerationMode, world: World, path: str) -> st.SearchStrategy:
    drawn = [operation.as_strategy(mode)]
    drawn += [operation.as_strategy(mode, path_parameters=ids) for ids in _real_ids(world, path)]
    return st.one_of(drawn)


def _header(response: Any, name: str) -> str:
    values = response.headers.get(name.lower()) or []
    return values[0] if values else ""


def _describe(case: schemathesis.Case, response: Any) -> str:
    # The body may be binary (a model download): show bytes, never decode them.
    return (f"{case.method} {case.formatted_path} -> {response.status_code}: "
            f"{response.content[:300]!r}")


def _check_problem(response: Any, where: str) -> None:
    assert _header(response, "content-type").startswith("application/problem+json"), where
    if where.startswith("HEAD "):
        return  # a HEAD answer has the headers of the problem, never its body
    body = response.json()
    for field, kind in PROBLEM_FIELDS.items():
        assert isinstance(body.get(field), kind), f"{where}: problem field {field!r} in {body}"
    assert body["status"] == response.status_code, where


@pytest.fixture
def fuzz_target(app, db, store, auth_a, monkeypatch):  # noqa: ANN001, ANN201
    """The app with tenant A's objects, and publishing replaced by a no-op: the fuzz
    submits jobs and sweeps, and no broker is part of this test."""
    monkeypatch.setattr("drtrain.kit.broker.publish_run_job", lambda _settings, _job_id: None)
    # The fuzz sends hundreds of wrong keys from one address on purpose; the failed-auth
    # limiter (tests/api/test_access.py) would rightly answer 429 to most of them.
    app.state.auth_limiter = FailedAuthLimiter(10**9, 60.0)
    world = seed_tenant(db, store, tenant_id(db, "tenant-a"))
    return schemathesis.openapi.from_asgi("/openapi.json", app), world


@pytest.mark.parametrize("method, path, mode", CASES,
                         ids=[f"{m} {p} {mode.value}" for m, p, mode in CASES])
def test_fuzz_with_a_valid_key(fuzz_target, auth_a, method, path, mode) -> None:  # noqa: ANN001
    schema, world = fuzz_target
    operation = schema[path][method]
    statuses: list[int] = []

    @FUZZ
    @given(case=_strategy(operation, mode, world, path))
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers=auth_a)
        where = _describe(case, response)
        statuses.append(response.status_code)
        assert response.status_code < 500, where
        if response.status_code >= 400:
            _check_problem(response, where)
        case.validate_response(response, checks=[
            response_schema_conformance, content_type_conformance, status_code_conformance],
            headers=auth_a)

    run()
    assert statuses, "the fuzz sent nothing"
    if os.environ.get("DRTRAIN_FUZZ_REPORT"):
        print(f"\n{method} {path} {mode.value}: {sorted(set(statuses))}")


UNAUTHENTICATED = [(m, p) for m, p, _ in OPERATIONS]


@pytest.mark.parametrize("method, path", UNAUTHENTICATED,
                         ids=[f"{m} {p}" for m, p in UNAUTHENTICATED])
def test_fuzz_without_a_valid_key(fuzz_target, method, path) -> None:  # noqa: ANN001
    """No key, an empty one, a malformed one or a well-formed unknown one: every /v1 route
    answers 401 with a challenge whatever the rest of the request; ops routes still work."""
    schema, world = fuzz_target
    operation = schema[path][method]
    keys = st.sampled_from([None, "", "Bearer ", "Bearer drt_" + "A" * 43, "Basic Zm9vOmJhcg==",
                            "Bearer " + "x" * 5000])

    @FUZZ
    @given(case=_strategy(operation, GenerationMode.POSITIVE, world, path), key=keys)
    def run(case: schemathesis.Case, key: str | None) -> None:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        if key is not None:
            headers["Authorization"] = key
        case.headers = headers
        response = case.call()
        where = _describe(case, response)
        assert response.status_code < 500, where
        if path.startswith("/v1/"):
            assert response.status_code == 401, where
            assert _header(response, "www-authenticate") == "Bearer", where
            _check_problem(response, where)
        elif response.status_code >= 400:
            _check_problem(response, where)

    run()


# ---------------------------------------------------------------- inputs the schema cannot describe
# The OpenAPI document cannot say "a cursor this API issued" or "any float64", so schemathesis
# never builds these; hypothesis does, directly.


def _token(created: str, job_id: object) -> str:
    raw = json.dumps([created, job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


tokens = st.one_of(
    st.text(max_size=60),
    st.builds(_token, st.text(max_size=40), st.text(max_size=40)),
    st.builds(_token, st.datetimes(timezones=st.none() | st.timezones()).map(
        lambda d: d.isoformat()), st.one_of(st.text(max_size=70), st.integers(), st.none())),
)


def test_page_tokens_never_break_listing(client, auth_a) -> None:  # noqa: ANN001
    @FUZZ
    @given(token=tokens)
    @example(token=_token("2024-01-01T00:00:00+00:00", "a\x00b"))  # NUL: a 500 once
    @example(token=_token("0001-01-01T00:00:00-23:59", "f" * 32))
    @example(token=_token("9999-12-31T23:59:59", ["list"]))
    def run(token: str) -> None:
        resp = client.get("/v1/jobs", params={"page_token": token}, headers=auth_a)
        assert resp.status_code in (200, 422), (token, resp.status_code, resp.text)
        if resp.status_code == 422:
            assert resp.headers["content-type"].startswith("application/problem+json")

    run()


@pytest.mark.parametrize("raw_id", ["a%00b", "%00", "..%2F..%2Fetc%2Fpasswd", "x" * 65,
                                    "%E2%80%AE", "builtin:..", "-rf", "%FF%FE"])
def test_odd_path_ids_are_refused_cleanly(client, auth_a, raw_id) -> None:  # noqa: ANN001
    """Ids that are no id this API made: 404 or 422 problem+json on every route, never 500."""
    from tests.api.test_cross_tenant import CASE_KEYS

    for method, path in CASE_KEYS:
        url = re.sub(r"\{[^}]+\}", raw_id, path)
        resp = client.request(method, url, headers=auth_a,
                              json={"inputs": [[0.0]]} if path.endswith("/predict") else None)
        allowed = {404, 422}
        if method == "DELETE" and raw_id.startswith("builtin:"):
            allowed.add(409)  # the builtin namespace is read-only, existing or not
        assert resp.status_code in allowed, (method, url, resp.status_code, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")


FLOAT32_MAX = float(np.finfo(np.float32).max)


def test_predict_on_any_finite_floats(fuzz_target, client, auth_a) -> None:  # noqa: ANN001
    """Whatever float32-range values a row holds (the domain models are trained on), predict
    answers probabilities that are finite and sum to one; beyond it, a 422 naming inputs.
    (Any float64 used to reach the model: 1e300 overflowed into a 500.)"""
    _, world = fuzz_target
    floats = st.floats(min_value=-FLOAT32_MAX, max_value=FLOAT32_MAX)

    @FUZZ
    @given(rows=st.lists(st.lists(floats, min_size=world.n_features,
                                  max_size=world.n_features), min_size=1, max_size=5))
    def run(rows: list[list[float]]) -> None:
        resp = client.post(f"/v1/jobs/{world.job_id}/predict", json={"inputs": rows},
                           headers=auth_a)
        assert resp.status_code == 200, (rows, resp.text)
        probs = resp.json()["probabilities"]
        assert len(probs) == len(rows)
        for p in probs:
            assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in p)
            assert math.isclose(sum(p), 1.0, rel_tol=1e-9)

    run()


@pytest.mark.parametrize("value", [3.5e38, -1e300, 1.7976931348623157e308])
def test_predict_beyond_float32_is_422(fuzz_target, client, auth_a, value) -> None:  # noqa: ANN001
    _, world = fuzz_target
    resp = client.post(f"/v1/jobs/{world.job_id}/predict",
                       json={"inputs": [[value] + [0.0] * (world.n_features - 1)]},
                       headers=auth_a)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"].startswith("body.inputs")
