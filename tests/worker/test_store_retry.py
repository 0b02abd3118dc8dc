"""The worker's store retries a transient failure with backoff for up to its budget, and
nothing else (worker/store_retry.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from drtrain.kit.storage import LocalStore
from worker.store_retry import PatientStore


class _Down:
    """``inner`` whose writes raise ``error`` ``times`` times first."""

    def __init__(self, inner: LocalStore, times: int, error: Exception) -> None:
        self.inner, self.left, self.error, self.calls = inner, times, error, 0

    def put_file(self, key: str, path: Path):  # noqa: ANN201
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise self.error
        return self.inner.put_file(key, path)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def _patient(down: _Down, seconds: float) -> tuple[PatientStore, _Clock]:
    clock = _Clock()
    return PatientStore(down, seconds, sleep=clock.sleep, clock=lambda: clock.now), clock


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "state.bin"
    path.write_bytes(b"x" * 100)
    return path


def test_a_blip_is_retried_with_growing_waits(tmp_path: Path, source: Path) -> None:
    down = _Down(LocalStore(tmp_path / "objects"), 4, EndpointConnectionError(endpoint_url="x"))
    store, clock = _patient(down, 30)
    assert store.put_file("a/b", source).size_bytes == 100
    assert down.calls == 5 and clock.waits == [0.5, 1.0, 2.0, 4.0]


def test_an_outage_longer_than_the_budget_is_raised(tmp_path: Path, source: Path) -> None:
    down = _Down(LocalStore(tmp_path / "objects"), 100, EndpointConnectionError(endpoint_url="x"))
    store, clock = _patient(down, 10)
    with pytest.raises(EndpointConnectionError):
        store.put_file("a/b", source)
    assert clock.now == 10  # waited out the whole budget, not a moment more


def test_a_lasting_error_is_raised_at_once(tmp_path: Path, source: Path) -> None:
    error = ClientError({"Error": {"Code": "NoSuchBucket", "Message": "gone"}}, "PutObject")
    down = _Down(LocalStore(tmp_path / "objects"), 1, error)
    store, clock = _patient(down, 30)
    with pytest.raises(ClientError):
        store.put_file("a/b", source)
    assert down.calls == 1 and clock.waits == []


def test_the_worker_runtime_retries_its_store_for_a_lease() -> None:
    from worker import celery_app

    runtime = celery_app.runtime()
    try:
        assert isinstance(runtime.store, PatientStore)
        assert runtime.store.seconds == celery_app.settings.lease_seconds
    finally:  # the next caller builds its own
        runtime.engine.dispose()
        celery_app._runtime_for.cache_clear()
