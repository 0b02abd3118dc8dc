"""Fixtures of the fault tests: one stack (database, broker db, API) per test module, and a
per-test guarantee that no worker outlives its test and no unfinished job leaks into the next.

PostgreSQL or Redis missing is a failure, never a skip.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch

from tests.faults.stack import REDIS_DB, Stack, live_group_members, wait_for
from tests.pg import fresh_database

# The test process only downloads and loads models; the workers get the cores.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    broker = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    broker.ping()
    broker.flushdb()
    broker.close()
    root: Path = tmp_path_factory.mktemp("faults")
    # Not migrated here: the stack runs `drtrain migrate` itself, as an operator would.
    with fresh_database("faults", migrate=False) as url:
        stack = Stack(root, url)
        try:
            stack.prepare()
            stack.start_api()
            yield stack
        finally:
            stack.close()


@pytest.fixture
def stack(service: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The module's stack with no worker yet; every worker a test starts is killed (the whole
    process group) when it ends, pass or fail, and the API is brought back if a test left it
    down."""
    service.abandon_live_jobs()
    try:
        yield service
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(service.logs())
        groups = [p.pid for p in service.workers.values()]
        try:
            service.stop_workers()
            service.abandon_live_jobs()
            wait_for("no stray worker process", lambda: not live_group_members(groups), 10)
        finally:
            if service.api is None or service.api.poll() is not None:
                service.start_api()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # noqa: ANN201
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
