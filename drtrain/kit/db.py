"""Engines and sessions, made per process (call ``make_engine`` after fork in workers)."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from pydantic_core import from_json
from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.orm import Session, sessionmaker

# A pooled connection idle for longer than this is pinged before use (a dead one is replaced);
# one used more recently is not, which saves a round trip on nearly every checkout under load.
PING_AFTER_IDLE_SECONDS = 1.0


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10,
                pool_timeout: float = 30.0, application_name: str | None = None) -> Engine:
    """An engine for this process. The API passes a pool sized with its thread limiter and a
    timeout of seconds (``api_engine``), a worker's training process the smallest pool its
    threads need (``worker_engine``); the CLI keeps SQLAlchemy's defaults.
    ``application_name`` is how PostgreSQL's ``pg_stat_activity`` shows its connections."""
    pool: dict[str, Any] = {"pool_size": pool_size, "max_overflow": max_overflow,
                            "pool_timeout": pool_timeout}
    return _engine(url, pool, application_name)


def _engine(url: str, pool: dict[str, Any], application_name: str | None) -> Engine:
    if url.startswith("sqlite"):
        if url in ("sqlite://", "sqlite:///:memory:"):
            pool = {}  # one in-memory database per connection: SQLAlchemy picks its own pool
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               **pool)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            cur = dbapi_conn.cursor()
            # WAL lets the API read while the worker writes; FKs are off by default in SQLite.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit survives
            # the process being killed, and only an OS crash or power loss can undo the last
            # ones (docs/reliability.md). FULL made every submit wait for an fsync.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        _savepoints_inside_a_transaction(engine)
        return engine
    connect_args = {"application_name": application_name} if application_name else {}
    engine = create_engine(url, json_deserializer=json_loads, connect_args=connect_args, **pool)
    _ping_when_idle(engine)
    return engine


def _savepoints_inside_a_transaction(engine: Engine) -> None:
    """Every SAVEPOINT on SQLite nests in a transaction that BEGIN opened.

    pysqlite opens a transaction only before its first INSERT, UPDATE or DELETE. A SAVEPOINT
    sent before any of them opens a transaction of its own, which its RELEASE commits: a row
    written inside ``begin_nested()`` would then survive the outer rollback (a refused
    submit's job committed after all). Opening the transaction here, before the savepoint,
    keeps pysqlite's late BEGIN everywhere else: reads before a session's first write run
    outside a transaction, so a write never meets a read snapshot another writer has made
    stale (SQLite answers that with "database is locked" at once, without waiting)."""

    @event.listens_for(engine, "savepoint")
    def _begin_first(conn: Any, _name: str | None) -> None:
        dbapi = conn.connection.driver_connection
        if not dbapi.in_transaction:
            dbapi.execute("BEGIN")


def json_loads(text: str | bytes) -> Any:
    """``json.loads`` in pydantic-core's parser: four times as fast, the same values; what
    it refuses (a lone surrogate escape...) goes to ``json.loads``."""
    try:
        return from_json(text)
    except ValueError:
        return json.loads(text)


def _ping_when_idle(engine: Engine) -> None:
    """``pool_pre_ping``, but only for connections idle longer than PING_AFTER_IDLE_SECONDS."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            if not getattr(dbapi_conn, "autocommit", False):
                dbapi_conn.rollback()
        except Exception as error:  # noqa: BLE001 - any failure means "dead, get another"
            # The pool discards this connection and checks out (or opens) another.
            raise exc.DisconnectionError(str(error)) from error


def api_engine(url: str, threads: int, pool_timeout: float) -> Engine:
    """The API process's engine: one pooled connection per thread of its limiter, and as many
    again for requests between their handler and their commit, so a thread never waits for a
    connection held by a request that is itself waiting for a thread."""
    return make_engine(url, pool_size=threads, max_overflow=threads, pool_timeout=pool_timeout,
                       application_name="drtrain-api")


def worker_engine(url: str, application_name: str) -> Engine:
    """The engine of a worker's training process (the connection budget in
    docs/operations.md): one pooled connection at rest, two at most while training. At most
    two threads use the database at once (the heartbeat and the checkpoint uploader; the
    runner's own writes come before and after training), so the second connection is opened
    only while both need one, and closed when it comes back."""
    return make_engine(url, pool_size=1, max_overflow=1, application_name=application_name)


def burst_engine(url: str, application_name: str) -> Engine:
    """An engine for work done in bursts seconds apart (a worker's reaper): one connection,
    shared by the burst's transactions, which the caller gives back with ``dispose()`` when
    the burst ends, so none sits idle in the meantime."""
    return _engine(url, {"pool_size": 1, "max_overflow": 0}, application_name)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@lru_cache(maxsize=16)
def reader_of(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions for single-statement reads on the same pool, in autocommit: no BEGIN and no
    ROLLBACK round trip around each query. A factory bound to one connection (tests run
    each test in one transaction) is returned as it is."""
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine):
        return factory
    return sessionmaker(bind.execution_options(isolation_level="AUTOCOMMIT"),
                        expire_on_commit=False)


def sqlite_file(bind: Any) -> str | None:
    """The file of an engine on a SQLite file; None for anything else (another database,
    an in-memory one, or a single connection, as the tests bind)."""
    if (isinstance(bind, Engine) and bind.dialect.name == "sqlite"
            and bind.url.database not in (None, "", ":memory:")):
        return bind.url.database
    return None


def local_file_sqlite(factory: sessionmaker[Session]) -> bool:
    """Whether the factory's engine is a SQLite file: its reads (WAL, never blocked by a
    writer) cost less where they are asked than a hop to a thread does."""
    return sqlite_file(factory.kw.get("bind")) is not None


@contextmanager
def raw_reader(factory: sessionmaker[Session]) -> Iterator[tuple[Any, Any]]:
    """(DBAPI connection, dialect) for reads of committed rows: a pooled connection in
    autocommit (no BEGIN, no ROLLBACK round trip), back in the pool on exit. A factory bound
    to one connection (the tests' transaction) lends that connection as it is."""
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine):
        if bind is None:
            raise ValueError("the sessionmaker has no bind")
        yield bind.connection.driver_connection, bind.dialect
        return
    pooled = bind.raw_connection()
    try:
        dbapi: Any = pooled.driver_connection
        # psycopg: outside a transaction a SELECT must not open one (its ROLLBACK on return
        # would be a round trip); sqlite3 never opens one for a SELECT.
        manual = getattr(dbapi, "autocommit", True) is False
        if manual:
            dbapi.autocommit = True
        try:
            yield dbapi, bind.dialect
        finally:
            if manual:
                dbapi.autocommit = False
    finally:
        pooled.close()


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
