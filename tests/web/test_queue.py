"""The tenant's queue as the web app shows it: a `drtrain up` of its own with a running cap of
two and one worker, so that one job runs, one holds the second slot waiting for the worker,
and the jobs after them wait in the queue."""
from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.web.server import LONG, Server, serving
from tests.web.test_app import open_app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Overrides the shared server for this module's pages (their recorder's origin too)."""
    with serving(tmp_path_factory.mktemp("queue") / "data", workers=1,
                 settings={"DRTRAIN_MAX_CONCURRENT_JOBS_PER_TENANT": "2"}) as srv:
        yield srv


@pytest.fixture
def lined_up(server: Server) -> Iterator[list[str]]:
    """Four long jobs: the first running, the second dispatched behind it, two waiting."""
    running = server.submit(LONG)["id"]
    server.wait(running, {"running"}, timeout=60)
    ids = [running] + [server.submit(LONG)["id"] for _ in range(3)]
    try:
        yield ids
    finally:
        with server.client() as c:
            for job_id in ids:
                c.post(f"/v1/jobs/{job_id}/cancel")


def queue_place(server: Server, job_id: str) -> int | None:
    with server.client() as c:
        return c.get("/v1/queue", params={"job_id": job_id}).json()["position"]


def test_the_job_page_shows_a_waiting_jobs_place_and_follows_the_queue(
        page: Page, server: Server, lined_up: list[str]) -> None:
    running, slotted, first, last = lined_up
    assert server.job(slotted)["status"] == "queued" and server.job(slotted)["dispatched_at"]
    assert (queue_place(server, first), queue_place(server, last)) == (1, 2)

    open_app(page, server, f"#/jobs/{last}")
    place = page.locator("#job-queue")
    expect(place).to_have_text("Waiting for a running slot — position 2 of 2 in your queue; "
                               "2 of 2 slots in use.")
    with server.client() as c:
        assert c.post(f"/v1/jobs/{first}/cancel").status_code in (200, 202)
    # Nothing about this job changed: the page learns its new place by polling the queue.
    expect(place).to_have_text("Waiting for a running slot — position 1 of 1 in your queue; "
                               "2 of 2 slots in use.")

    open_app(page, server, f"#/jobs/{slotted}")
    expect(page.locator("#job-queue")).to_have_attribute("data-state", "dispatched")
    expect(page.locator("#job-queue")).to_contain_text("Waiting for a worker")
    open_app(page, server, f"#/jobs/{running}")
    expect(page.locator(".job-page")).to_have_attribute("data-job-id", running)
    expect(page.locator("#job-queue")).to_have_count(0)


def test_the_jobs_list_marks_the_waiting_jobs_with_their_place(
        page: Page, server: Server, lined_up: list[str]) -> None:
    running, slotted, first, last = lined_up
    asked: list[str] = []
    page.on("request", lambda r: asked.append(urlsplit(r.url).path))
    open_app(page, server, "#/jobs")
    status = 'tr[data-job-id="{}"] td[data-col="status"]'.format
    expect(page.locator(status(first))).to_contain_text("queued · #1")
    expect(page.locator(status(last))).to_contain_text("queued · #2")
    expect(page.locator(status(slotted))).to_have_text("queued")
    expect(page.locator(status(running))).to_have_text("running")
    # One read of the queue per refresh of the list (which reads the jobs first), not one per
    # waiting row.
    assert 1 <= asked.count("/v1/queue") <= asked.count("/v1/jobs")
