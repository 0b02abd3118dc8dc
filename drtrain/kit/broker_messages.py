"""Which jobs have a "run job <id>" message in the broker right now, waiting or taken.

The reaper re-publishes a queued job only when no message for it exists, instead of guessing
from queue lengths (a message that a worker has taken but not yet claimed is not in the
queue, yet it is not lost). Redis: the queue's lists (every priority) plus kombu's ``unacked``
hash, where a message stays from the moment a worker takes it until it is acknowledged
(late acks: after the task). Filesystem transport: the message files of the queue.
"""
from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import redis

from drtrain.kit.broker import RUN_JOB_TASK, is_filesystem
from drtrain.kit.settings import Settings

log = logging.getLogger(__name__)

# kombu's Redis transport: priority lists are "<queue>\x06\x16<n>", taken messages wait for
# their ack in this hash.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
UNACKED_KEY = "unacked"


def job_id_of(message: dict[str, Any]) -> str | None:
    """The job id a kombu message asks to run, or None for anything else."""
    headers = message.get("headers") or {}
    if headers.get("task") not in (None, RUN_JOB_TASK):
        return None
    try:
        body = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _from_redis(url: str, queue: str) -> set[str]:
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    try:
        raw: list[bytes | str] = []
        for name in [queue, *(f"{queue}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS)]:
            raw += client.lrange(name, 0, -1)
        found = {job_id_of(json.loads(item)) for item in raw}
        for item in client.hvals(UNACKED_KEY):
            payload = json.loads(item)
            if isinstance(payload, list) and payload and isinstance(payload[0], dict):
                if len(payload) < 3 or payload[2] in (queue, None):
                    found.add(job_id_of(payload[0]))
    finally:
        client.close()
    return {f for f in found if f is not None}


def _from_folder(folder: Path, queue: str) -> set[str]:
    found: set[str] = set()
    for path in folder.glob(f"*.{queue}.msg"):
        try:
            job_id = job_id_of(json.loads(path.read_bytes()))
        except (OSError, ValueError):
            continue  # taken by a worker meanwhile, or not a message
        if job_id is not None:
            found.add(job_id)
    return found


def job_ids_in_broker(settings: Settings, *, queue: str) -> set[str] | None:
    """Ids of the jobs with a message in ``queue`` (waiting or taken); None when the broker
    cannot be asked (unreachable, or a transport this function does not know)."""
    try:
        if is_filesystem(settings):
            return _from_folder(settings.broker_folder / "queue", queue)
        url = settings.resolved_broker_url
        if url.startswith(("redis://", "rediss://")):
            return _from_redis(url, queue)
    except (OSError, ValueError, redis.RedisError) as exc:
        log.warning("broker messages unavailable: %s", type(exc).__name__)
    return None
