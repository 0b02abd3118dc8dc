"""The read shortcut (api/fast_reads.py) against the routes alone: random valid and invalid
requests to the three reads it stands in for, sent to an app with it and to one without
(``create_app(shortcuts=False)``), must get the same status, headers and bytes."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy.orm import sessionmaker

from api.app import create_app
from api.auth_limits import FailedAuthLimiter
from api.fast_reads import FastReads
from drtrain.kit.models import JobStatus
from tests.factories import add_job, add_points, tenant_id

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

# Headers that differ between any two answers, whoever gives them.
_VARYING = {"date", "server"}


@pytest.fixture
def routes_only(settings, engine, store, connection) -> Iterator[TestClient]:  # noqa: ANN001
    app = create_app(settings, engine=engine, store=store, shortcuts=False)
    app.state.sessionmaker = sessionmaker(bind=connection, join_transaction_mode="create_savepoint",
                                          expire_on_commit=False)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def jobs(db, tenant_a_key, tenant_b_key) -> dict[str, str]:  # noqa: ANN001
    owner = tenant_id(db)
    running = add_job(db, owner, JobStatus.running, tags=["x"], warnings=["w"])
    add_points(db, running, 12)
    for status in (JobStatus.queued, JobStatus.succeeded, JobStatus.queued):
        add_job(db, owner, status, tags=["x", "y"] if status is JobStatus.queued else None)
    others = add_job(db, tenant_id(db, "tenant-b"), JobStatus.failed)
    db.commit()
    return {"running": running.id, "others": others.id}


VALUES = ["", "0", "1", "2", "3", "007", "-1", "50", "200", "201", "1000", "10000", "10001",
          "2147483647", "2147483648", "x", "1.5", " 1", *JobStatus, "QUEUED", "spec", "SPEC",
          "y", "x", "-bad", "a" * 80, "%", "é", "null", "true"]
NAMES = ["status", "page_size", "page_token", "include", "tag", "since", "limit", "other"]


def _paths(ids: dict[str, str]) -> st.SearchStrategy[str]:
    job = st.sampled_from([ids["running"], ids["running"], ids["others"], "0" * 32, "nope", "a" * 65, "a-b",
                           ids["running"].upper(), ids["running"] + "%20", "%2e%2e"])
    return st.one_of(
        st.just("/v1/jobs"),
        st.sampled_from(["/v1/jobs/", "/v1/jobsx", "/v1/jobs//metrics"]),
        job.map(lambda j: f"/v1/jobs/{j}"),
        job.map(lambda j: f"/v1/jobs/{j}/metrics"),
        job.map(lambda j: f"/v1/jobs/{j}/metrics/"))


def _query(tokens: list[str]) -> st.SearchStrategy[str]:
    value = st.one_of(st.sampled_from(VALUES + tokens), st.text(max_size=6))
    pair = st.tuples(st.sampled_from(NAMES), value).map(
        lambda p: f"{p[0]}={quote(p[1], safe='')}")
    valid = st.sampled_from(["", "page_size=2", "status=queued", "include=spec", "tag=x",
                             "since=3&limit=4", "limit=10000", f"page_token={tokens[0]}"])
    return st.one_of(valid, st.lists(pair, max_size=4).map("&".join),
                     st.sampled_from(["page_size", "limit=&since=", "&&", "since=%zz"]))


def _headers(keys: dict[str, str], etags: list[str]) -> st.SearchStrategy[dict[str, str]]:
    authorization = st.one_of(st.just(f"Bearer {keys['a']}"), st.sampled_from([
        None, f"Bearer {keys['a']}", f"bearer {keys['a']}", f"Bearer  {keys['a']} ",
        f"Bearer {keys['b']}", "Bearer drt_unknown", "Bearer ", "Basic abc", keys["a"]]))
    if_none_match = st.sampled_from([None, "*", "garbage", *etags])
    return st.tuples(authorization, if_none_match).map(lambda h: {
        k: v for k, v in (("Authorization", h[0]), ("If-None-Match", h[1])) if v is not None})


def _answer(client: TestClient, url: str, headers: dict[str, str]) -> tuple:
    resp = client.get(url, headers=headers)
    kept = sorted((k, v) for k, v in resp.headers.items() if k not in _VARYING)
    return resp.status_code, kept, resp.content


def test_the_shortcut_answers_exactly_as_the_routes(client, routes_only, jobs, tenant_a_key,
                                                    tenant_b_key, auth_a, monkeypatch) -> None:  # noqa: ANN001
    # Out of the failed-auth limit's reach (requests without a key count toward it): its
    # Retry-After counts down in seconds, which the two answers of one case may straddle.
    for app in (client.app, routes_only.app):
        app.state.auth_limiter = FailedAuthLimiter(10**9, 60.0)
    first = client.get("/v1/jobs", params={"page_size": 2}, headers=auth_a).json()
    tokens = [first["next_page_token"], first["next_page_token"][:-2] + "zz"]
    etags = [client.get(url, headers=auth_a).headers["etag"] for url in (
        f"/v1/jobs/{jobs['running']}", "/v1/jobs", f"/v1/jobs/{jobs['running']}/metrics")]
    keys = {"a": tenant_a_key, "b": tenant_b_key}
    answered = {"n": 0}
    real_answer = FastReads._answer

    async def counted(self: FastReads, *args: object) -> bool:
        done = await real_answer(self, *args)  # type: ignore[arg-type]
        answered["n"] += done
        return done

    monkeypatch.setattr(FastReads, "_answer", counted)

    @hypothesis_settings(max_examples=300, deadline=None, database=None, derandomize=True,
                         suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(path=_paths(jobs), query=_query(tokens), headers=_headers(keys, etags))
    def compare(path: str, query: str, headers: dict[str, str]) -> None:
        url = f"{path}?{query}" if query else path
        assert _answer(client, url, headers) == _answer(routes_only, url, headers), url

    compare()
    assert answered["n"] >= 30, answered  # the shortcut took part, not only the routes
