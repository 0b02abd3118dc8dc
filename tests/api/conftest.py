"""Fixtures for HTTP tests of the API: the app on the test's rolled-back session (see
tests/conftest.py), a client, tenants' keys and a recorder in place of the broker."""
from __future__ import annotations

import csv
import io
import socket
import warnings
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.deps import get_session
from drtrain.kit.db import (
    discard_after_commit,
    make_engine,
    make_sessionmaker,
    run_after_commit,
    session_scope,
)
from drtrain.kit.migrate import upgrade
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore
from drtrain.tenants.keys import create_key

with warnings.catch_warnings():
    # Starlette asks for httpx2 for its TestClient; httpx still works and is what we pin.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

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


class Published(list):
    """What was published; reading it waits until every submit handed to the app so far is
    published (submits are published on a thread of their own once answered)."""

    def __init__(self, app) -> None:  # noqa: ANN001
        super().__init__()
        self.app = app

    def _settled(self) -> list:
        if not self.app.state.submits.drain(10):
            raise AssertionError("submits still unpublished after 10 s")
        return list.copy(self)

    def __eq__(self, other: object) -> bool:
        return self._settled() == other

    def __len__(self) -> int:
        return len(self._settled())

    def __getitem__(self, index):  # noqa: ANN001, ANN204
        return self._settled()[index]

    def __iter__(self):  # noqa: ANN204
        return iter(self._settled())

    __hash__ = None  # type: ignore[assignment]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch, db: Session, app) -> list[tuple[str, bool]]:  # noqa: ANN001
    """Records (job id, whether the request's transaction had ended) for every publish."""
    calls = Published(app)

    def fake_publish(_settings: object, job_id: str) -> None:
        calls.append((job_id, not db.in_transaction()))

    def fake_publish_many(_settings: object, job_ids: list[str], **_: object) -> None:
        calls.extend((job_id, not db.in_transaction()) for job_id in job_ids)

    monkeypatch.setattr("drtrain.kit.broker.publish_run_job", fake_publish)
    monkeypatch.setattr("drtrain.kit.broker.publish_run_jobs", fake_publish_many)
    return calls


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


@pytest.fixture
def embedded(tmp_path) -> Iterator[tuple[TestClient, dict[str, str], object]]:  # noqa: ANN001
    """The embedded setup (a SQLite file) served by TestClient: (client, auth headers of the
    tenant "local", its sessionmaker)."""
    settings = Settings(data_dir=tmp_path, database_url="", broker_url="", storage_url="",
                        environment="embedded")
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as s:
        key = create_key(s, "local")
    try:
        with TestClient(create_app(settings, engine=engine)) as client:
            yield client, {"Authorization": f"Bearer {key}"}, factory
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
