"""The Celery worker's command line, shared by ``drtrain worker`` and ``drtrain up``."""
from __future__ import annotations


def node_name(name: str | None) -> str | None:
    """``drtrain worker --name``: NAME@<host> (Celery expands ``%h``), or NAME as given when
    it already names a host; None keeps Celery's ``celery@<host>``."""
    if not name:
        return None
    return name if "@" in name else f"{name}@%h"


def worker_argv(*, concurrency: int = 1, pool: str = "prefork", queue: str = "drtrain",
                loglevel: str = "INFO", hostname: str | None = None) -> list[str]:
    argv = ["worker", f"--concurrency={concurrency}", f"--pool={pool}", f"--queues={queue}",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    return argv
