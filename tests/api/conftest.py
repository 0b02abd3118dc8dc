"""Fixtures for API tests against a real PostgreSQL.

One database per test run (``drtrain_test_<pid>``), migrated by Alembic; each test runs in
one connection whose outer transaction is rolled back at the end, so tests never see each
other's rows. PostgreSQL missing is a failure, never a skip: CI must not pass without it.
"""
from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.deps import get_session
from drtrain.kit.db import discard_after_commit, make_engine, run_after_commit
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore, make_store
from drtrain.tenants.keys import create_key
from tests.pg import fresh_database

with warnings.catch_warnings():
    # Starlette asks for httpx2 for its TestClient; httpx still works and is what we pin.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A freshly migrated database for this test run; dropped afterwards."""
    with fresh_database("test") as url:
        yield url


@pytest.fixture(scope="session")
def engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator:
    conn = engine.connect()
    outer = conn.begin()
    yield conn
    outer.rollback()
    conn.close()


@pytest.fixture
def db(connection) -> Iterator[Session]:  # noqa: ANN001
    """The test's session; requests share it, and its commits only release savepoints."""
    session = Session(bind=connection, join_transaction_mode="create_savepoint",
                      expire_on_commit=False)
    yield session
    session.close()


@pytest.fixture
def settings(tmp_path, pg_url: str) -> Settings:  # noqa: ANN001
    return Settings(data_dir=tmp_path / "data", database_url=pg_url,
                    storage_url=(tmp_path / "objects").as_uri(), environment="test",
                    broker_url="filesystem://",
                    fashion_mnist_dir=tmp_path / "no-fashion-mnist")


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    return make_store(settings)


@pytest.fixture
def app(settings: Settings, engine: Engine, store: ObjectStore, db: Session, connection):  # noqa: ANN001, ANN201
    app = create_app(settings, engine=engine, store=store)
    # Code that opens its own sessions (metrics, streams) must see this test's rows too.
    app.state.sessionmaker = sessionmaker(bind=connection, join_transaction_mode="create_savepoint",
                                          expire_on_commit=False)

    def _request_session() -> Iterator[Session]:
        # A savepoint per request: a failed request undoes only its own writes, never the
        # rows the test set up before it; a successful one is "committed" for the test.
        request_tx = db.begin_nested()
        try:
            yield db
            request_tx.commit()
            db.commit()  # ends the session's transaction, as the real dependency does
        except BaseException:
            discard_after_commit(db)
            request_tx.rollback()
            raise
        run_after_commit(db)

    app.dependency_overrides[get_session] = _request_session
    return app


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # noqa: ANN001
    with TestClient(app) as client:
        yield client


@pytest.fixture
def tenant_a_key(db: Session) -> str:
    return create_key(db, "tenant-a")


@pytest.fixture
def tenant_b_key(db: Session) -> str:
    return create_key(db, "tenant-b")


@pytest.fixture
def auth_a(tenant_a_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant_a_key}"}


@pytest.fixture
def auth_b(tenant_b_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant_b_key}"}


@pytest.fixture(scope="session")
def digits_csv() -> bytes:
    """200 rows of sklearn's digits (raw 0..16 pixels) with a header and a ``label`` column."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([f"p{i}" for i in range(64)] + ["label"])
    for row, label in zip(digits.data[:200], digits.target[:200], strict=True):
        writer.writerow([int(v) for v in row] + [int(label)])
    return out.getvalue().encode()
