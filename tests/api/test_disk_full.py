"""A full database answers 507 problem+json on every way a job is submitted (the shortcut,
the route with an Idempotency-Key, a sweep), never a 500 or an error that reaches the
server, and /readyz says storage is full. The errors are the drivers' own: SQLite's
SQLITE_FULL from a page limit on the real file, PostgreSQL's disk_full (SQLSTATE 53100)
raised by a trigger on the jobs table."""
from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from tests.api.conftest import TestClient
from tests.factories import small_spec

SPEC = small_spec("builtin:digits")


def _submits(client: TestClient, auth: dict[str, str]) -> list[Any]:
    """A plain submit (the shortcut: the key is known), a keyed one (the route), a sweep."""
    assert client.get("/v1/jobs", headers=auth).status_code == 200  # the key into the cache
    return [client.post("/v1/jobs", json=SPEC, headers=auth),
            client.post("/v1/jobs", json=SPEC, headers={**auth, "Idempotency-Key": "k1"}),
            client.post("/v1/sweeps", json={"base": SPEC, "grid": {"seed": [1, 2]}},
                        headers=auth)]


def _assert_507(responses: list[Any]) -> None:
    for resp in responses:
        assert resp.status_code == 507, (resp.request.url, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["type"] == "https://drtrain.dev/problems/insufficient-storage"


def _assert_not_ready(client: TestClient) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 503, resp.text
    assert resp.json()["checks"]["storage"].startswith("full"), resp.json()


@pytest.fixture
def sqlite_full(embedded) -> tuple[TestClient, dict[str, str], dict[str, int]]:  # noqa: ANN001
    """The embedded setup whose SQLite file may grow only to ``limit["pages"]`` pages (set
    on every connection as it is checked out)."""
    client, auth, factory = embedded
    limit = {"pages": 2**30}

    @event.listens_for(factory.kw["bind"], "checkout")
    def _page_limit(dbapi_conn, _record, _proxy) -> None:  # noqa: ANN001
        dbapi_conn.execute(f"PRAGMA max_page_count = {limit['pages']}")

    state = client.app.state  # type: ignore[attr-defined]
    state.settings = state.settings.model_copy(update={"max_concurrent_jobs_per_tenant": 100})
    return client, auth, limit


def test_sqlite_full_answers_507_on_every_submit(sqlite_full) -> None:  # noqa: ANN001
    client, auth, limit = sqlite_full
    with client.app.state.engine.connect() as conn:  # type: ignore[attr-defined]
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        limit["pages"] = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    # Jobs fit while the file's last pages have room; then every submit is refused.
    statuses = [client.post("/v1/jobs", json=SPEC, headers=auth).status_code for _ in range(60)]
    assert 507 in statuses and set(statuses[statuses.index(507):]) == {507}, statuses
    _assert_507(_submits(client, auth))
    _assert_not_ready(client)


DISK_FULL_TRIGGER = """
CREATE FUNCTION refuse_for_want_of_space() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100';
END $$;
CREATE TRIGGER disk_full BEFORE INSERT ON jobs
  FOR EACH ROW EXECUTE FUNCTION refuse_for_want_of_space();
"""


def test_postgresql_disk_full_answers_507_on_every_submit(client, auth_a, connection) -> None:  # noqa: ANN001
    connection.exec_driver_sql(DISK_FULL_TRIGGER)  # rolled back with the test's transaction
    _assert_507(_submits(client, auth_a))
    _assert_not_ready(client)
