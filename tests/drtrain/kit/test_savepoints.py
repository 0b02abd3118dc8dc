"""A savepoint never outlives its transaction: what a refused submit wrote inside
``begin_nested()`` is gone once the transaction rolls back, on SQLite as on PostgreSQL."""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from drtrain.kit.db import make_engine, make_sessionmaker
from drtrain.kit.migrate import upgrade
from drtrain.kit.models import Tenant
from drtrain.tenants.repository import add_tenant, tenant_by_name
from tests.pg import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_of(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    """A database of the test's own: what these tests commit stays out of the folder's."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'savepoints.sqlite3'}"
            upgrade(url)
        else:
            url = stack.enter_context(fresh_database("savepoints"))
        engine = make_engine(url)
        stack.callback(engine.dispose)
        yield engine


def _tenants_named(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(Tenant)
                            .where(Tenant.name == name)).scalar_one()


@pytest.mark.parametrize("read_first", [False, True], ids=["savepoint-first", "read-first"])
def test_a_row_written_in_a_savepoint_is_rolled_back_with_its_transaction(
        engine_of: Engine, read_first: bool) -> None:
    """pysqlite opens its transaction only at the first INSERT, UPDATE or DELETE: a SAVEPOINT
    before one used to open a transaction of its own, which RELEASE committed."""
    name = f"refused-{read_first}"
    session = make_sessionmaker(engine_of)()
    try:
        if read_first:
            assert tenant_by_name(session, name) is None
        with session.begin_nested():
            add_tenant(session, name)
        session.rollback()
    finally:
        session.close()
    assert _tenants_named(engine_of, name) == 0


def test_a_row_written_in_a_savepoint_is_committed_with_its_transaction(
        engine_of: Engine) -> None:
    session = make_sessionmaker(engine_of)()
    try:
        with session.begin_nested():
            add_tenant(session, "kept")
        session.commit()
    finally:
        session.close()
    assert _tenants_named(engine_of, "kept") == 1
