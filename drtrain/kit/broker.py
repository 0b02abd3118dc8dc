"""The Celery client shared by the API (publisher) and the workers (consumer).

Torch-free. SQL is the truth about jobs, so the broker only carries "run job <id>" nudges:
no result backend, late acknowledgement, prefetch 1, and a very long visibility timeout,
because dead workers are detected by SQL leases (``drtrain.jobs.lifecycle``), not by Redis
redelivering a message that may still be running.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import redis
from celery import Celery
from kombu.utils.uuid import uuid

from drtrain.kit.settings import Settings

log = logging.getLogger(__name__)

RUN_JOB_TASK = "drtrain.run_job"
DEFAULT_QUEUE = "drtrain"
# Redis would redeliver an unacked message after this; a training job may legitimately run
# for days, and a second delivery is harmless anyway (claim() refuses it), so make it long.
VISIBILITY_TIMEOUT_SECONDS = 7 * 24 * 3600
# The filesystem transport (embedded mode) has no push: an idle worker looks for a message
# file this often (kombu's default is 1 s, which made a job wait 0.4 s on average before a
# worker saw it). An empty folder listed 20 times a second costs next to nothing.
FILESYSTEM_POLLING_SECONDS = 0.05


def _filesystem_options(settings: Settings) -> dict:
    root = settings.broker_folder
    queue_dir = root / "queue"
    processed = root / "processed"
    control = root / "control"
    for folder in (queue_dir, processed, control):
        folder.mkdir(parents=True, exist_ok=True)
    # Producers write to data_folder_out and consumers read data_folder_in: one folder makes
    # them meet.
    return {
        "data_folder_in": str(queue_dir),
        "data_folder_out": str(queue_dir),
        "processed_folder": str(processed),
        "store_processed": False,
        # Without this kombu writes exchange files to ./control in the current directory.
        "control_folder": str(control),
        "polling_interval": FILESYSTEM_POLLING_SECONDS,
    }


def is_filesystem(settings: Settings) -> bool:
    return settings.resolved_broker_url.startswith("filesystem://")


def make_celery(settings: Settings, *, queue: str = DEFAULT_QUEUE) -> Celery:
    """A Celery app configured for drtrain (the same config for client and worker)."""
    url = settings.resolved_broker_url
    app = Celery("drtrain", broker=url, set_as_current=False)
    transport_options: dict = {"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS}
    if is_filesystem(settings):
        transport_options.update(_filesystem_options(settings))
        # kombu's filesystem transport, with a publish that consumers never see half written.
        app.conf.broker_transport = "drtrain.kit.fs_transport:Transport"
    app.conf.update(
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        # The filesystem transport has no fanout exchange; remote control needs one.
        worker_enable_remote_control=not is_filesystem(settings),
        worker_hijack_root_logger=False,
    )
    return app


_clients: dict[tuple, Celery] = {}
_clients_lock = threading.Lock()


def _client(settings: Settings, queue: str) -> Celery:
    # Keyed by pid too: a Celery connection pool must not be shared across fork(). The
    # folder only matters to the filesystem transport (resolving it costs syscalls).
    url = settings.resolved_broker_url
    folder = str(settings.broker_folder) if url.startswith("filesystem://") else ""
    key = (os.getpid(), url, folder, queue)
    with _clients_lock:
        app = _clients.get(key)
        if app is None:
            app = _clients[key] = make_celery(settings, queue=queue)
        return app


RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5,
                "interval_max": 2.0}


def publish_run_job(settings: Settings, job_id: str, *, queue: str | None = None) -> None:
    """Send "run job <id>". Raises if the broker is unreachable (the job stays queued in SQL
    and the reaper re-publishes it later)."""
    q = queue or DEFAULT_QUEUE
    _client(settings, q).send_task(RUN_JOB_TASK, args=[job_id], queue=q, retry=True,
                                   retry_policy=RETRY_POLICY)


def publish_run_jobs(settings: Settings, job_ids: list[str], *,
                     queue: str | None = None) -> None:
    """``publish_run_job`` for several jobs, through one producer in one kombu publish batch
    (on Redis one pipelined round trip; a transport without batches publishes each at once).
    Raises when the batch fails: how many of its messages got through is then unknown (a
    second message for a job is harmless).

    Each message is the one ``send_task`` makes, built and sent by the two calls
    ``send_task`` itself ends in (``amqp.create_task_message``, ``amqp.send_task_message``)
    with the values it would pass them for this task. What ``send_task`` does besides is the
    same for every job of a batch (routing the task name, a result object nobody reads), and
    a large part of a batch's cost when repeated per message; the queue is declared with the first message
    (kombu caches it per channel anyway). tests/api/test_fast_submit.py checks the messages
    against ``send_task``'s."""
    q = queue or DEFAULT_QUEUE
    app = _client(settings, q)
    amqp = app.amqp
    sent_event = app.conf.task_send_sent_event
    with app.producer_or_acquire() as producer, producer.batch():
        declare: list | None = None  # None: as send_task (declares this queue)
        for job_id in job_ids:
            task_id = uuid()
            message = amqp.create_task_message(
                task_id, RUN_JOB_TASK, [job_id], None, reply_to=app.thread_oid,
                create_sent_event=sent_event, ignore_result=None,
                # what Celery's saferepr gives for a list of one id (32 hex digits)
                argsrepr=repr([job_id]), kwargsrepr="{}")
            amqp.send_task_message(producer, RUN_JOB_TASK, message, queue=q, retry=True,
                                   retry_policy=RETRY_POLICY, declare=declare)
            declare = []


def queue_depth(settings: Settings, *, queue: str = DEFAULT_QUEUE) -> int | None:
    """Messages waiting in the broker (for /metrics and the reaper); None if unknown."""
    try:
        if is_filesystem(settings):
            folder = Path(_filesystem_options(settings)["data_folder_in"])
            return sum(1 for p in folder.iterdir() if p.suffix == ".msg")
        url = settings.resolved_broker_url
        if url.startswith(("redis://", "rediss://")):
            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            try:
                return int(client.llen(queue))
            finally:
                client.close()
    except (OSError, redis.RedisError) as exc:
        # An unreachable broker means "unknown depth", not an error page.
        log.warning("queue depth unavailable: %s", type(exc).__name__)
    return None
