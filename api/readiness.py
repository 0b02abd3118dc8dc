"""Broker reachability without importing the worker (the API must stay light), and
whether storage has room."""
from __future__ import annotations

import shutil
import time
from typing import Any

from drtrain.kit.errors import InsufficientStorage
from drtrain.kit.settings import Settings

# A write refused for want of space this recently still makes the API not ready: the
# database or store may be on another machine, whose disk only its answers tell of.
FULL_RECENTLY_SECONDS = 60.0
# Less free space than this in the data folder (the embedded database, local objects and
# the broker's messages) counts as full.
MIN_FREE_BYTES = 2**20


def storage_room(state: Any, settings: Settings) -> None:
    """Raises InsufficientStorage when storage is full: a write refused for want of space
    within FULL_RECENTLY_SECONDS, or the data folder with less than MIN_FREE_BYTES free."""
    full_at = getattr(state, "storage_full_at", None)
    if full_at is not None and time.monotonic() - full_at < FULL_RECENTLY_SECONDS:
        ago = time.monotonic() - full_at
        raise InsufficientStorage(f"a write was refused for want of space {ago:.0f} s ago")
    folder = settings.data_dir
    if folder.exists():
        free = shutil.disk_usage(folder).free
        if free < MIN_FREE_BYTES:
            raise InsufficientStorage(f"{free} bytes free in the data folder")


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
