"""One way for every test folder to get a real PostgreSQL database of its own.

PostgreSQL missing is a failure, never a skip: CI must not pass without it.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

ADMIN_URL = os.environ.get("DRTRAIN_TEST_POSTGRES_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def admin_engine() -> Engine:
    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        engine.dispose()
        pytest.fail(f"PostgreSQL is required for these tests and is unreachable at {ADMIN_URL} "
                    f"(set DRTRAIN_TEST_POSTGRES_URL to point elsewhere): {exc.orig}",
                    pytrace=False)
    return engine


@contextmanager
def fresh_database(prefix: str, *, migrate: bool = True) -> Iterator[str]:
    """A new database (migrated by Alembic unless ``migrate=False``), dropped afterwards.
    Yields its SQLAlchemy URL."""
    from drtrain.kit.migrate import upgrade

    admin = admin_engine()
    name = f"drtrain_{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
