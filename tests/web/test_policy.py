"""The Content-Security-Policy in Chromium: the web app, /docs (Swagger UI) and /redoc load
under it with no violation, and the docs pages make no request to another host, not even
for an image. Every request a page makes is watched (conftest.py's recorder fails a test on
a request to another origin or on a console error, which is where Chromium reports a refused
script, style or image)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect

from tests.web.server import Server

if TYPE_CHECKING:
    from tests.web.conftest import Recorder, Seeded

# Every violation of the page's policy, as the page itself sees them.
LISTEN = """window.__violations = [];
document.addEventListener('securitypolicyviolation',
  e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"""


def _violations(page: Page) -> list[str]:
    return page.evaluate("window.__violations")


def _settle(page: Page) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)  # effects that run after the first paint (images, workers)


@pytest.mark.parametrize("path, ready", [
    ("/docs", ".swagger-ui .opblock"),
    ("/redoc", "[role=menu] li"),
])
def test_docs_load_under_the_policy_from_this_host_only(strict_anon_page: Page, server: Server,
                                                        recorder: Recorder, path: str,
                                                        ready: str) -> None:
    requests: list[str] = []
    strict_anon_page.on("request", lambda r: requests.append(r.url))
    strict_anon_page.add_init_script(LISTEN)
    resp = strict_anon_page.goto(server.url + path)
    assert resp is not None and "frame-ancestors 'none'" in resp.headers[
        "content-security-policy"]
    expect(strict_anon_page.locator(ready).first).to_be_visible()
    _settle(strict_anon_page)
    assert _violations(strict_anon_page) == []
    assert requests and all(
        u.startswith((server.url, "data:", "blob:")) for u in requests), requests
    assert not recorder.foreign


def test_the_app_loads_under_the_policy(strict_page: Page, server: Server,
                                        seeded: Seeded) -> None:
    """Every page of the app, a finished job's charts and a sweep's included."""
    plain = server.wait(seeded.plain["id"])
    strict_page.add_init_script(LISTEN)
    for route in ("#/jobs", f"#/jobs/{plain['id']}", "#/sweeps", f"#/sweeps/{seeded.sweep['id']}",
                  f"#/compare?ids={plain['id']},{seeded.dr['id']}", "#/submit", "#/datasets"):
        strict_page.goto(f"{server.url}/{route}")
        expect(strict_page.locator("#root *").first).to_be_visible()
        _settle(strict_page)
        assert _violations(strict_page) == [], route


def test_docs_keep_no_key_in_local_storage(strict_anon_page: Page, server: Server) -> None:
    strict_anon_page.goto(server.url + "/docs")
    expect(strict_anon_page.locator(".swagger-ui .authorize").first).to_be_visible()
    strict_anon_page.locator(".swagger-ui .authorize").first.click()
    strict_anon_page.locator(".modal-ux input").first.fill("not-a-real-key")
    strict_anon_page.locator(".modal-ux .auth-btn-wrapper button.authorize").first.click()
    stored = strict_anon_page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    assert "not-a-real-key" not in stored
