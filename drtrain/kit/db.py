"""Engines and sessions, made per process (call ``make_engine`` after fork in workers)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            cur = dbapi_conn.cursor()
            # WAL lets the API read while the worker writes; FKs are off by default in SQLite.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """The one owner of commit outside requests (worker tasks, reaper, CLI)."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        discard_after_commit(session)
        session.rollback()
        raise
    finally:
        session.close()
    run_after_commit(session)


def after_commit(session: Session, fn) -> None:  # noqa: ANN001
    """Run ``fn()`` once the session's current transaction has committed.

    Used to publish a Celery message only after the job row it names is durable; the
    owner of commit (request dependency or ``session_scope``) calls ``run_after_commit``.
    """
    session.info.setdefault("after_commit", []).append(fn)


def run_after_commit(session: Session) -> None:
    callbacks = session.info.pop("after_commit", [])
    for fn in callbacks:
        fn()


def discard_after_commit(session: Session) -> None:
    session.info.pop("after_commit", None)


def ping(engine: Engine) -> None:
    """Raises when the database cannot answer a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
