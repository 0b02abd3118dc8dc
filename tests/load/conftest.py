"""Load tests: a real API process on a loopback port, many concurrent httpx clients, bounded
time. PostgreSQL missing is a failure, never a skip."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.load.server import CAPPED, Api, pg_api


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One API over PostgreSQL per module, with a short auth cache and fast event polls."""
    root: Path = tmp_path_factory.mktemp("load")
    with pg_api(root, events_poll_seconds="0.2", events_keepalive_seconds="2",
                body_idle_seconds="3", **CAPPED) as api:
        yield api
