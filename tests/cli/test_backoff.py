"""The client waits out 429 and 503 answers: the server's Retry-After stretched by a random
part, never beyond its bound, a bounded number of times; then the error carries the
Retry-After and how many retries were made."""
from __future__ import annotations

import random
from pathlib import Path

import httpx
import pytest

from drtrain_client import Backoff, Client, DrtrainError
from drtrain_client import client as client_module

BASE, KEY = "http://drtrain.test", "k"
JOB = {"id": "a" * 32, "status": "queued"}


def _refusing(refusals: int, retry_after: str | None = "2", status: int = 429):
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= refusals:
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return httpx.Response(status, headers=headers, json={
                "type": "https://drtrain.dev/problems/too-many", "title": "Too many requests",
                "status": status, "detail": "the tenant has 8 active jobs (the cap)"})
        return httpx.Response(202, json=JOB)
    return handle, calls


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", slept.append)
    return slept


def _client(handle, backoff: Backoff | None = None) -> Client:  # noqa: ANN001
    return Client(BASE, KEY, transport=httpx.MockTransport(handle), backoff=backoff)


def test_a_refused_submit_waits_out_retry_after_with_jitter_then_succeeds(waits) -> None:  # noqa: ANN001
    handle, calls = _refusing(3)
    backoff = Backoff(rng=random.Random(1))
    assert _client(handle, backoff).submit_job({"dataset_id": "builtin:digits"}) == JOB
    assert len(calls) == 4 and len(waits) == 3
    assert all(2 <= w <= 3 for w in waits)  # never shorter than asked, at most 1.5 times
    assert len(set(waits)) == 3  # jittered: clients told the same delay spread out


def test_past_its_retries_the_error_carries_retry_after_and_the_retries(waits) -> None:  # noqa: ANN001
    handle, calls = _refusing(100)
    with pytest.raises(DrtrainError) as caught:
        _client(handle, Backoff(retries=4)).submit_job({"dataset_id": "builtin:digits"})
    assert caught.value.status == 429 and caught.value.retry_after == 2
    assert caught.value.retries == 4 and len(calls) == 5 and len(waits) == 4
    assert "retry after 2 s; gave up after 4 retries" in str(caught.value)


def test_waits_are_bounded_and_doubled_without_retry_after(waits) -> None:  # noqa: ANN001
    handle, _ = _refusing(3, retry_after="600", status=503)
    _client(handle, Backoff(max_wait=5)).submit_job({})
    assert waits == [5, 5, 5]
    waits.clear()
    handle, _ = _refusing(3, retry_after=None)
    _client(handle, Backoff(jitter=0)).submit_job({})
    assert waits == [1, 2, 4]


def test_no_retries_and_uploads_raise_at_once(waits, tmp_path: Path) -> None:  # noqa: ANN001
    handle, calls = _refusing(1)
    with pytest.raises(DrtrainError) as caught:
        _client(handle, Backoff(retries=0)).submit_job({})
    assert caught.value.retry_after == 2 and caught.value.retries == 0 and waits == []
    handle, calls = _refusing(1)
    data = tmp_path / "d.csv"
    data.write_text("a,label\n1,x\n")
    with pytest.raises(DrtrainError):  # a streamed body cannot be sent twice
        _client(handle).upload_dataset(data, wait=False)
    assert len(calls) == 1 and waits == []


def test_other_errors_are_not_retried(waits) -> None:  # noqa: ANN001
    handle, calls = _refusing(1, status=409)
    with pytest.raises(DrtrainError) as caught:
        _client(handle).submit_job({})
    assert caught.value.status == 409 and len(calls) == 1 and waits == []


def test_a_full_storage_quota_is_not_waited_out(waits) -> None:  # noqa: ANN001
    # waiting frees no storage: the 429 is raised at once
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"content-type": "application/problem+json"}, json={
            "type": "https://drtrain.dev/problems/storage-quota",
            "title": "Storage quota exhausted", "status": 429,
            "detail": "the tenant uses 0.3 MiB of its 0.1 MiB quota"})
    with pytest.raises(DrtrainError) as caught:
        _client(handle).submit_job({})
    assert caught.value.status == 429 and caught.value.retries == 0 and waits == []


def test_each_wait_is_announced_with_the_answer_and_its_length(waits) -> None:  # noqa: ANN001
    handle, _ = _refusing(2)
    heard: list[tuple[str, float]] = []
    client = Client(BASE, KEY, transport=httpx.MockTransport(handle),
                    backoff=Backoff(jitter=0), on_retry=lambda answer, s: heard.append((str(answer), s)))
    assert client.submit_job({}) == JOB
    assert [s for _, s in heard] == waits == [2, 2]
    assert heard[0][0].startswith("429 Too many requests: the tenant has 8 active jobs")
