"""The FastAPI application factory. Nothing is created at import time (no engine, no
store), so importing this module is cheap and safe in forked processes."""
from __future__ import annotations

import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from sqlalchemy import Engine, event
from starlette.types import ASGIApp

from api import docs, openapi_contract, operation_docs, problems, upload_checks, web
from api.body_gate import BodyGate
from api.events import EventHub
from api.fast_reads import FastReads
from api.fast_submit import FastSubmit
from api.job_reads import JobReads
from api.limits import BodyTimeoutMiddleware, TenantSlots
from api.routers import datasets, jobs, ops, queue, sweeps
from api.security_headers import SecurityHeaders
from api.submits import Submits
from api.telemetry import RequestStats, RequestStatsMiddleware
from drtrain.kit.db import api_engine, make_sessionmaker
from drtrain.kit.job_changes import NoChanges, job_changes_for
from drtrain.kit.publishing import ChildPublisher, publish_jobs
from drtrain.kit.settings import Settings, get_settings
from drtrain.kit.storage import ObjectStore, make_store
from drtrain.tenants.keys import KeyCache

log = logging.getLogger(__name__)

# How long a shutdown waits for submits in hand (committing, answering, publishing).
SHUTDOWN_DRAIN_SECONDS = 10.0

DESCRIPTION = ("Training as a service for deep belief networks and MLPs with diversifying "
               "regularization (arXiv:1911.02048). Errors are RFC 9457 problem+json.")


OPENAPI_TAGS = [
    {"name": "datasets", "description": "Upload training data (CSV, NPZ, IDX) or use a built-in "
                                        "set; every dataset belongs to one tenant."},
    {"name": "jobs", "description": "Submit a JobSpec (DBN pretraining with generative DR, MLP "
                                    "fine-tuning with feature DR), watch it, cancel it, download "
                                    "its model and checkpoints, predict."},
    {"name": "sweeps", "description": "Many jobs from one spec: a grid over spec fields, "
                                      "summarised per point with seeds pooled."},
    {"name": "operations", "description": "Liveness, readiness, Prometheus metrics and the "
                                          "settings a client shows."},
]


@asynccontextmanager
async def _job_changes_watched(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """Job reads are cached until the tenant's jobs change (api/job_reads.py); only a
    running app watches for changes (PostgreSQL: a LISTEN thread), and only a database
    reached through an engine (tests bind sessions to one uncommitted connection)."""
    factory = app.state.sessionmaker
    changes = app.state.job_changes = (
        job_changes_for(factory.kw.get("bind"), settings.database_listen_url)
        if settings.job_cache_seconds > 0
        else NoChanges())

    def bump(_session: object) -> None:
        # This process's commits move the version at once (after the commit, before the
        # response): read-your-writes where change notices arrive a moment later.
        changes.bump_local()

    event.listen(factory, "after_commit", bump)
    try:
        yield
    finally:
        event.remove(factory, "after_commit", bump)
        app.state.job_changes = NoChanges()
        changes.close()


def _ensure_bucket(store: ObjectStore) -> None:
    """A fresh S3 server (MinIO, moto) has no bucket: the API makes its own. A store it cannot
    reach yet is no reason not to start; /readyz says what is wrong until it is fixed."""
    try:
        store.ensure_bucket()
    except Exception as exc:  # noqa: BLE001 - told in the log and by /readyz
        log.warning("object store not ready at start-up: %s: %s", type(exc).__name__, exc)


def _lifespan(settings: Settings, engine: Engine, owns_engine: bool,
              publisher: ChildPublisher | None) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sync handlers, dependencies and the key lookup's hop share anyio's default
        # limiter: as many threads as the pool has connections (drtrain.kit.db.api_engine).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        await anyio.to_thread.run_sync(_ensure_bucket, app.state.store)
        if publisher is not None:  # started now, so the first submits do not wait for it
            threading.Thread(target=publisher.warm, name="publisher-warm", daemon=True).start()
        try:
            async with _job_changes_watched(app, settings), upload_checks.running(app):
                yield
        finally:
            # Submits already answered are published before the process goes.
            if not await anyio.to_thread.run_sync(app.state.submits.drain,
                                                  SHUTDOWN_DRAIN_SECONDS):
                log.warning("submits still in hand at shutdown; the reaper publishes their jobs")
            if publisher is not None:
                await anyio.to_thread.run_sync(publisher.close)
        if owns_engine:
            engine.dispose()

    return lifespan


def _set_state(app: FastAPI, settings: Settings, engine: Engine, store: ObjectStore | None,
               publisher: ChildPublisher | None) -> None:
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.job_changes = NoChanges()  # a running app watches (lifespan)
    app.state.store = store or make_store(settings)
    app.state.request_stats = RequestStats()
    app.state.key_cache = KeyCache(settings.auth_cache_seconds)
    app.state.key_lookups = {}  # key -> its lookup in flight (api.deps.look_up_key)
    app.state.events = EventHub(poll_seconds=settings.events_poll_seconds,
                                keepalive_seconds=settings.events_keepalive_seconds)
    app.state.stream_slots = TenantSlots(settings.max_streams_per_tenant, "event streams")
    app.state.upload_slots = TenantSlots(settings.max_uploads_per_tenant, "uploads")
    app.state.validator = upload_checks.make_validator(settings)
    app.state.submits = Submits(publisher.publish if publisher else publish_jobs)
    app.state.job_reads = JobReads(app.state)


class _Api(FastAPI):
    """FastAPI with the security headers outside Starlette's own error middleware, which
    answers an unexpected error's 500 outside every middleware added with ``add_middleware``:
    every response carries them, that 500 included."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               store: ObjectStore | None = None, publish_in_child: bool = False,
               shortcuts: bool = True) -> FastAPI:
    """``publish_in_child``: submitted jobs are published by a child process
    (``drtrain.kit.publishing.ChildPublisher``), as the served app does; off, by this
    process (tests that watch or replace the publish in-process). ``shortcuts`` off: every
    request goes through FastAPI's routing (tests comparing the two)."""
    settings = settings or get_settings()
    settings.check_production()
    owns_engine = engine is None
    engine = engine or api_engine(settings.resolved_database_url, settings.api_threads,
                                  settings.db_pool_timeout_seconds)
    publisher = ChildPublisher() if publish_in_child else None
    # docs_url/redoc_url off: api/docs.py serves both from the package, not from a CDN.
    app = _Api(title="drtrain", version="1", description=DESCRIPTION,
                  lifespan=_lifespan(settings, engine, owns_engine, publisher),
                  docs_url=None, redoc_url=None, openapi_tags=OPENAPI_TAGS,
                  generate_unique_id_function=openapi_contract.operation_id)
    _set_state(app, settings, engine, store, publisher)
    if shortcuts:
        # Innermost: the hottest reads and plain submits answered before FastAPI's routing,
        # through the routes' own objects (api/fast_reads.py, api/fast_submit.py).
        app.add_middleware(FastReads, api=app)
        app.add_middleware(FastSubmit, api=app)
    # Outside the shortcuts: a body is neither read by them nor by a route before its key
    # is checked, and never past its route's limit (api/body_gate.py).
    app.add_middleware(BodyGate, api=app)
    app.add_middleware(BodyTimeoutMiddleware, idle_seconds=settings.body_idle_seconds,
                       total_seconds=settings.body_total_seconds)
    app.add_middleware(RequestStatsMiddleware, stats=app.state.request_stats)
    problems.install(app)
    openapi_contract.install(app)
    # Each router carries its full paths (``/v1/...``); none is mounted under a prefix here.
    for router in (datasets.router, jobs.router, queue.router, sweeps.router, ops.router,
                   docs.router, web.router):
        operation_docs.install(router)
        app.include_router(router)
    return app


def main_app() -> FastAPI:
    """For ``uvicorn --factory api.app:main_app``: settings from the environment."""
    app = create_app(publish_in_child=True)
    # What exists now (modules, the app, its routes and schemas) lives as long as the process:
    # kept out of the collector's full passes, which under concurrent requests walked it all
    # again and again under concurrent requests.
    gc.collect()
    gc.freeze()
    return app
