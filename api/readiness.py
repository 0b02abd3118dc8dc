"""Broker reachability without importing the worker (the API must stay light)."""
from __future__ import annotations

from drtrain.kit.settings import Settings


def broker_ping(settings: Settings) -> None:
    url = settings.resolved_broker_url
    if url.startswith("filesystem://"):
        # The embedded broker is a folder shared with the worker: ready when it is usable.
        settings.broker_folder.mkdir(parents=True, exist_ok=True)
        return
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        return
    from kombu import Connection

    with Connection(url, connect_timeout=2) as conn:
        conn.ensure_connection(max_retries=1)
