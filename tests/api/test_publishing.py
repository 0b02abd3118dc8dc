"""drtrain.kit.publishing.ChildPublisher: submitted jobs published by a child process,
for real (SQLite and the filesystem broker), and what happens when that child dies."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from drtrain.kit import broker, publishing
from drtrain.kit.broker_messages import job_ids_in_broker
from drtrain.kit.db import make_engine, make_sessionmaker, session_scope
from drtrain.kit.migrate import upgrade
from drtrain.kit.publishing import ChildPublisher
from drtrain.kit.settings import Settings
from drtrain.tenants.keys import create_key
from tests.factories import small_spec


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url="", broker_url="", storage_url="",
                    environment="embedded", fashion_mnist_dir=tmp_path / "none")


@pytest.fixture
def publisher() -> Iterator[ChildPublisher]:
    p = ChildPublisher()
    try:
        yield p
    finally:
        p.close()


def _not_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Publishing in this process fails from now on: what still gets published, a child did."""
    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("published in the API process")

    monkeypatch.setattr(broker, "publish_run_job", refuse)
    monkeypatch.setattr(broker, "publish_run_jobs", refuse)


def _child_pid(publisher: ChildPublisher) -> int:
    pool = publisher._pool
    assert pool is not None
    (pid,) = pool._processes  # type: ignore[attr-defined]
    return pid


def test_jobs_are_published_by_a_child_process(settings, publisher, monkeypatch) -> None:  # noqa: ANN001
    publisher.warm()
    assert _child_pid(publisher) != os.getpid()
    _not_here(monkeypatch)
    publisher.publish(settings, ["a" * 32, "b" * 32])
    publisher.publish(settings, ["c" * 32])
    assert job_ids_in_broker(settings, queue=broker.DEFAULT_QUEUE) == {"a" * 32, "b" * 32,
                                                                      "c" * 32}


def test_a_dead_child_is_replaced_and_its_publish_done_here(settings, publisher,
                                                           monkeypatch) -> None:  # noqa: ANN001
    publisher.warm()
    first = _child_pid(publisher)
    os.kill(first, signal.SIGKILL)
    here: list[str] = []
    real = publishing.publish_jobs

    def counted(s: Settings, job_ids: list[str]) -> None:
        here.extend(job_ids)
        real(s, job_ids)

    monkeypatch.setattr(publishing, "publish_jobs", counted)
    publisher.publish(settings, ["a" * 32])  # the child is gone: published here
    assert here == ["a" * 32]
    monkeypatch.setattr(publishing, "publish_jobs", real)
    _not_here(monkeypatch)
    publisher.publish(settings, ["b" * 32])  # by a new child
    assert _child_pid(publisher) not in (first, os.getpid())
    assert job_ids_in_broker(settings, queue=broker.DEFAULT_QUEUE) == {"a" * 32, "b" * 32}


def test_after_close_jobs_are_published_here(settings, publisher, monkeypatch) -> None:  # noqa: ANN001
    publisher.close()
    here: list[str] = []
    monkeypatch.setattr(publishing, "publish_jobs", lambda _s, ids: here.extend(ids))
    publisher.publish(settings, ["a" * 32])
    assert here == ["a" * 32] and publisher._pool is None


@pytest.mark.parametrize("idempotency_key", [None, "k1"])  # the shortcut, and the route
def test_the_served_apps_submits_are_published_from_the_child_before_shutdown_ends(
        settings, monkeypatch, idempotency_key) -> None:  # noqa: ANN001
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    with session_scope(make_sessionmaker(engine)) as s:
        key = create_key(s, "local")
    auth = {"Authorization": f"Bearer {key}"}
    app = create_app(settings, engine=engine, publish_in_child=True)
    try:
        with TestClient(app) as client:
            client.get("/v1/jobs", headers=auth)  # the key cached
            _not_here(monkeypatch)
            headers = {**auth, **({"Idempotency-Key": idempotency_key} if idempotency_key else {})}
            resp = client.post("/v1/jobs", json=small_spec("builtin:digits"), headers=headers)
            assert resp.status_code == 202
        # The shutdown waited for the child's publish.
        assert job_ids_in_broker(settings, queue=broker.DEFAULT_QUEUE) == {resp.json()["id"]}
    finally:
        engine.dispose()


def test_the_child_goes_when_its_api_is_killed(tmp_path: Path) -> None:
    """``kill -9`` on the API leaves no publishing process behind (its pool's pipes alone
    would keep it waiting for ever)."""
    import subprocess
    import sys
    import time

    script = ("from drtrain.kit.publishing import ChildPublisher\n"
              "import threading, time\n"
              "p = ChildPublisher()\n"
              "threading.Thread(target=p.warm).start()  # started from a thread that ends\n"
              "while p._pool is None or not p._pool._processes: time.sleep(0.05)\n"
              "time.sleep(1)\n"
              "print(*p._pool._processes, flush=True)\n"
              "time.sleep(60)\n")
    api = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                           cwd=Path(__file__).resolve().parents[2])
    try:
        assert api.stdout is not None
        child = int(api.stdout.readline())
        os.kill(child, 0)  # alive while the API is (and after its starting thread ended)
        api.kill()
        api.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            if _reaped(child):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"publishing process {child} outlived its API")
    finally:
        api.kill()


def _reaped(pid: int) -> bool:
    """A zombie counts as gone (its new parent reaps it when it gets to it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
