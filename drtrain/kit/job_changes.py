"""Whether a tenant's job rows may have changed since a moment: a version that moves on
every committed change to ``jobs``. The API caches job and job-list bodies under
the version read *before* their query and serves them only while the version is unchanged:
a change committed before the query is in the rows; one committed after it moves the version
before anyone can be served the old body (after the commit, never before).

- SQLite (the embedded default): ``PRAGMA data_version`` on a connection of its own, which
  moves whenever any other connection, in any process, commits to the file. Exact and
  synchronous: a write the API itself committed is seen by the next read.
- PostgreSQL: migration 0006's trigger sends ``NOTIFY drtrain_jobs, '<tenant id>'`` with each
  committed change to a job row; a thread LISTENs and counts them per tenant. Delivery takes
  a moment after the commit, so this process also counts its own commits
  (``bump_local``: after the commit, before the response) for read-your-writes. While the
  listener is not connected (or the trigger is missing), ``version`` is None: nothing is
  cached or served from the cache; a reconnect starts a new epoch (what was missed while
  away can never be served).
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Hashable
from typing import Any, Protocol

from sqlalchemy import Engine, make_url

from drtrain.kit.db import sqlite_file

log = logging.getLogger(__name__)

CHANNEL = "drtrain_jobs"
TRIGGER = "drtrain_jobs_changed"
APPLICATION_NAME = "drtrain-job-changes"  # how the listener shows in pg_stat_activity
# The listener wakes this often when idle, to notice a dead connection (a ping) and a stop.
LISTEN_WAKE_SECONDS = 1.0


class JobChanges(Protocol):
    def version(self, tenant_id: str) -> Hashable | None: ...

    def bump_local(self) -> None: ...

    def close(self) -> None: ...


class NoChanges:
    """No way to know (an in-memory or test-bound database): nothing is cached."""

    def version(self, tenant_id: str) -> Hashable | None:
        return None

    def bump_local(self) -> None:
        pass

    def close(self) -> None:
        pass


class SqliteChanges:
    def __init__(self, path: str) -> None:
        # Never writes and never holds a transaction open (autocommit): its data_version
        # moves with every commit made through any other connection to the file.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()

    def version(self, tenant_id: str) -> Hashable | None:
        with self._lock:
            try:
                return self._conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                return None

    def bump_local(self) -> None:
        pass  # the API's own commits move data_version too

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresChanges:
    def __init__(self, engine: Engine, listen_url: str = "") -> None:
        """``listen_url``: where to LISTEN when ``engine`` reaches PostgreSQL through a
        transaction-mode pooler (which cannot hold a LISTEN); empty: the engine's own URL."""
        self._engine = engine
        self._listen_url = make_url(listen_url) if listen_url else engine.url
        self._counts: dict[str, int] = {}
        self._local = 0
        self._local_lock = threading.Lock()
        self._epoch: int | None = None  # None: not listening, nothing may be cached
        self._epochs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-changes", daemon=True)
        self._thread.start()

    def version(self, tenant_id: str) -> Hashable | None:
        epoch = self._epoch
        if epoch is None:
            return None
        return epoch, self._local, self._counts.get(tenant_id, 0)

    def bump_local(self) -> None:
        with self._local_lock:
            self._local += 1

    def wait_listening(self, timeout: float) -> bool:
        """For tests: whether the listener is connected within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self._epoch is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._epoch is not None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=LISTEN_WAKE_SECONDS * 3)

    def _connect(self) -> Any:
        import psycopg

        cargs, cparams = self._engine.dialect.create_connect_args(self._listen_url)
        conn = psycopg.connect(*cargs, **{**cparams, "application_name": APPLICATION_NAME},
                               autocommit=True, connect_timeout=5)
        has_trigger = conn.execute(
            "SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass('jobs')",
            (TRIGGER,)).fetchone()
        if not has_trigger:
            conn.close()
            raise RuntimeError(f"trigger {TRIGGER} on jobs is missing (migration 0006)")
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except Exception as exc:  # noqa: BLE001 - any failure: retry, serve uncached meanwhile
                log.warning("job change listener cannot connect (%s); job reads are not cached",
                            exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            self._epochs += 1
            self._epoch = self._epochs  # everything cached before this is never served
            try:
                self._listen(conn)
            except Exception as exc:  # noqa: BLE001
                log.warning("job change listener lost its connection (%s); reconnecting", exc)
            finally:
                self._epoch = None
                conn.close()

    def _listen(self, conn: Any) -> None:
        counts = self._counts
        while not self._stop.is_set():
            received = False
            for note in conn.notifies(timeout=LISTEN_WAKE_SECONDS, stop_after=1000):
                received = True
                counts[note.payload] = counts.get(note.payload, 0) + 1
            if not received:
                conn.execute("SELECT 1")  # raises on a dead connection


def job_changes_for(engine: Engine | Any, listen_url: str = "") -> JobChanges:
    """The feed for this engine's database (``NoChanges`` when it cannot tell); PostgreSQL
    listens at ``listen_url`` when given (see ``PostgresChanges``)."""
    path = sqlite_file(engine)
    if path is not None and not path.startswith("file:"):  # a URI would need uri=True
        return SqliteChanges(path)
    if (isinstance(engine, Engine) and engine.dialect.name == "postgresql"
            and engine.dialect.driver == "psycopg"):
        return PostgresChanges(engine, listen_url)
    return NoChanges()
