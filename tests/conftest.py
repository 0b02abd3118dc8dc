"""Fixtures every test folder shares: a real PostgreSQL database per folder, a session per
test whose writes are rolled back, the settings and the object store that go with them.

Each top folder under tests/ (api, drtrain, worker...) gets a freshly migrated database of
its own the first time one of its tests asks for ``pg_url``, dropped when the run ends, so a
folder's committed rows never meet another folder's tests. A folder's conftest overrides
what it needs differently (tests/worker: settings with short worker timings).
PostgreSQL missing is a failure, never a skip: CI must not pass without it.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from drtrain.kit.db import make_engine
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore, make_store
from tests.pg import fresh_database

TESTS = Path(__file__).parent


class FolderDatabases:
    """One migrated database per test folder and one engine per database, made on first use
    and closed (engines disposed, then databases dropped) when the run ends."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._urls: dict[str, str] = {}
        self._engines: dict[str, Engine] = {}

    def url(self, folder: str) -> str:
        if folder not in self._urls:
            self._urls[folder] = self._stack.enter_context(fresh_database(folder))
        return self._urls[folder]

    def engine(self, url: str) -> Engine:
        if url not in self._engines:
            engine = make_engine(url)
            self._stack.callback(engine.dispose)
            self._engines[url] = engine
        return self._engines[url]


def folder_of(module_path: Path) -> str:
    """The top folder under tests/ a test module lives in ("tests" for tests/ itself)."""
    parts = module_path.relative_to(TESTS).parts
    return parts[0] if len(parts) > 1 else "tests"


@pytest.fixture(scope="session")
def folder_databases() -> Iterator[FolderDatabases]:
    with ExitStack() as stack:
        yield FolderDatabases(stack)


@pytest.fixture(scope="module")
def pg_url(request: pytest.FixtureRequest, folder_databases: FolderDatabases) -> str:
    """The URL of this test folder's database (a module may override it with its own)."""
    return folder_databases.url(folder_of(request.path))


@pytest.fixture(scope="module")
def engine(pg_url: str, folder_databases: FolderDatabases) -> Engine:
    return folder_databases.engine(pg_url)


@pytest.fixture
def connection(engine: Engine) -> Iterator:
    conn = engine.connect()
    outer = conn.begin()
    yield conn
    outer.rollback()
    conn.close()


@pytest.fixture
def db(connection) -> Iterator[Session]:  # noqa: ANN001
    """The test's session: its commits only release savepoints, and everything it wrote is
    rolled back when the test ends, so tests never see each other's rows."""
    session = Session(bind=connection, join_transaction_mode="create_savepoint",
                      expire_on_commit=False)
    yield session
    session.close()


@pytest.fixture
def settings(tmp_path: Path, pg_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=pg_url,
                    storage_url=(tmp_path / "objects").as_uri(), environment="test",
                    broker_url="filesystem://",
                    fashion_mnist_dir=tmp_path / "no-fashion-mnist")


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    return make_store(settings)
