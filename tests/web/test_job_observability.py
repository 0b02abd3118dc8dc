"""The job page's System charts and Logs (web/src/views/system.tsx, logs.tsx) in headless
Chromium, on a job a real worker of the shared `drtrain up` trained (conftest.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from playwright.sync_api import Page, expect

from tests.web.server import ARTIFACTS, Server
from tests.web.test_app import metric_points, open_app, points

if TYPE_CHECKING:
    from tests.web.conftest import Seeded


def test_the_system_charts_draw_the_workers_figures(page: Page, server: Server,
                                                     seeded: Seeded) -> None:
    job = server.wait(seeded.plain["id"])
    assert job["status"] == "succeeded", job
    recorded = metric_points(server, job["id"])
    cpu = [p for p in recorded if p["name"] == "sys.cpu_percent"]
    rss = [p for p in recorded if p["name"] == "sys.rss_bytes"]
    epochs = job["spec"]["pretrain"]["epochs"] + job["spec"]["finetune"]["epochs"]
    assert len(cpu) == len(rss) == epochs
    open_app(page, server, f"#/jobs/{job['id']}")
    for testid, n in [("chart-system-cpu", len(cpu)), ("chart-system-memory", len(rss))]:
        expect(page.locator(f'[data-testid="{testid}"]')).to_have_attribute("data-series", "1")
        page.wait_for_function(
            f"document.querySelector('[data-testid=\"{testid}\"]')?.dataset.points == {n}")
        assert points(page, testid) == n
    expect(page.locator('[data-testid="chart-system-memory"]')).to_contain_text("Memory (MiB)")
    expect(page.locator('[data-testid="chart-system-gpu"]')).to_have_count(0)  # a CPU worker


def test_the_logs_show_the_jobs_lines(page: Page, server: Server, seeded: Seeded) -> None:
    job = server.wait(seeded.plain["id"])
    with server.client() as c:
        text = c.get(f"/v1/jobs/{job['id']}/logs").text
    assert f"job {job['id']} attempt 1 claimed by" in text and "finetune epoch 4:" in text
    open_app(page, server, f"#/jobs/{job['id']}")
    logs = page.locator("#job-logs")
    expect(logs).to_have_text(text.rstrip("\n"))
    expect(logs).to_have_attribute("data-attempt", "1")
    logs.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "job-logs.png"), full_page=True)
