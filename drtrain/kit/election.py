"""Which worker does the reaper's work: one at a time, elected by a lease in Redis.

Every worker runs a reaper thread, but only the holder of the lease reaps; the others only
try to take the lease each round. The holder renews it every round; a holder that dies
stops renewing, and another worker takes over once the lease has run out (``ttl``).

A Redis lease rather than a PostgreSQL advisory lock: a session-level advisory lock needs a
connection held for as long as the lock, which a transaction-mode pooler (PgBouncer) does not
give, and the reaper has nothing to do while the broker is unreachable anyway (nothing could
be published). The lock is redis-py's (``SET NX PX`` with a token; renewed only by its owner).

With the filesystem transport (embedded mode: one machine, one worker), or any broker that
is not Redis, every reaper holds the lease, as before there was one; its writes are
conditional UPDATEs, so even several are harmless.
"""
from __future__ import annotations

import logging

import redis
from redis.exceptions import LockError

from drtrain.kit.settings import Settings

log = logging.getLogger(__name__)

LEASE_KEY = "drtrain:reaper:{queue}"


class ReaperLease:
    """``held()`` once per round: True while this process is the elected reaper of ``queue``."""

    def __init__(self, settings: Settings, queue: str, ttl_seconds: float) -> None:
        self._lock = None
        url = settings.resolved_broker_url
        if url.startswith(("redis://", "rediss://")):
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
            # thread_local=False: the token lives on the object, whichever thread asks.
            self._lock = client.lock(LEASE_KEY.format(queue=queue), timeout=ttl_seconds,
                                     blocking=False, thread_local=False)

    def held(self) -> bool:
        if self._lock is None:
            return True
        try:
            if self._lock.local.token is not None:
                try:
                    self._lock.reacquire()  # renew: only the owner's token can
                    return True
                except LockError:
                    self._lock.local.token = None  # expired and taken by another worker
                    log.info("reaper lease lost")
            return bool(self._lock.acquire(blocking=False))
        except redis.RedisError as exc:
            log.warning("reaper lease unavailable: %s", type(exc).__name__)
            return False

    def release(self) -> None:
        """Hand the lease on at once (a clean shutdown), instead of after its ttl."""
        if self._lock is None or self._lock.local.token is None:
            return
        try:
            self._lock.release()
        except (LockError, redis.RedisError):
            pass  # already expired or unreachable: it runs out by itself
