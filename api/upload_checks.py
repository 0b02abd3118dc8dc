"""The API process's side of dataset checks: the validation processes it starts (warmed at
start-up), the sweep that fails uploads whose check died with a previous process, and the
built-in datasets' summaries, worked out at start-up rather than on a first request."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import FastAPI

from drtrain.datasets import builtins, intake
from drtrain.datasets.validation import Validator
from drtrain.kit.settings import Settings

log = logging.getLogger(__name__)
SWEEP_SECONDS = 60.0


def make_validator(settings: Settings) -> Validator:
    return Validator(settings.upload_validators, settings.upload_validation_seconds,
                     settings.upload_validation_memory_bytes)


async def _sweep(app: FastAPI) -> None:
    state = app.state
    try:
        failed = await anyio.to_thread.run_sync(intake.sweep_stale, state.sessionmaker,
                                                state.store, state.settings)
        if failed:
            log.warning("failed %d upload(s) whose check was interrupted", failed)
    except Exception:  # noqa: BLE001 - the next round tries again
        log.warning("sweeping interrupted upload checks failed", exc_info=True)


async def _warm_builtins(app: FastAPI) -> None:
    try:
        await anyio.to_thread.run_sync(builtins.list_builtins, app.state.settings)
    except Exception:  # noqa: BLE001 - a first request will try again, and say why
        log.warning("summarising the built-in datasets failed", exc_info=True)


async def _every_minute(app: FastAPI) -> None:
    while True:
        await anyio.sleep(SWEEP_SECONDS)
        await _sweep(app)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[None]:
    """For the app's lifespan: one sweep before serving, then one a minute; the forkserver
    and the built-ins' summaries start in the background, so no first request waits."""
    await _sweep(app)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(anyio.to_thread.run_sync, app.state.validator.warm)
        tasks.start_soon(_warm_builtins, app)
        tasks.start_soon(_every_minute, app)
        yield
        tasks.cancel_scope.cancel()
