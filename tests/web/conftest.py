"""Browser tests of the web app: a real `drtrain up` and Debian's headless Chromium, driven by
Playwright for Python (which never downloads a browser of its own here).

Every page records the requests it makes and its console: a request to another origin or a
console error fails the test that caused it. Each test leaves a full-page screenshot in
``build/web-screenshots/`` (or ``$DRTRAIN_WEB_ARTIFACTS``).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.web.server import ARTIFACTS, DIAGNOSED, LONG, PLAIN, SWEEP_BASE, SWEEP_GRID, TINY, Server, serving

CHROMIUM = Path(os.environ.get("DRTRAIN_CHROMIUM", "/usr/bin/chromium"))

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.e2e]



@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("web") / "data", workers=2) as srv:
        yield srv


@dataclass
class Seeded:
    long: dict[str, Any]
    dr: dict[str, Any]
    plain: dict[str, Any]
    sweep: dict[str, Any]
    diagnosed: dict[str, Any]


@pytest.fixture(scope="session")
def seeded(server: Server) -> Seeded:
    """Jobs submitted once, up front, so they train while the first tests run: the long one
    first (it takes a worker), then two short arms, a 4-job sweep and a two-layer job for the
    other worker."""
    long = server.submit(LONG)
    dr = server.submit(TINY)
    plain = server.submit(PLAIN)
    with server.client() as c:
        r = c.post("/v1/sweeps", json={"base": SWEEP_BASE, "grid": SWEEP_GRID})
        assert r.status_code == 202, r.text
        sweep = r.json()
    diagnosed = server.submit(DIAGNOSED)
    return Seeded(long, dr, plain, sweep, diagnosed)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():  # .ci/run installs Debian's chromium; a bare machine may lack it
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)  # two shared cores: give the live views time
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@dataclass
class Recorder:
    """What a page did: requests to any origin but the server's, and console errors."""

    origin: str
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """An expected console error (Chromium logs every 4xx answer a script receives)."""
        self.allowed.append(re.compile(pattern))

    def on_request(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.foreign.append(url)

    def on_console(self, kind: str, text: str) -> None:
        if kind == "error" and not any(p.search(text) for p in self.allowed):
            self.errors.append(text)


@pytest.fixture
def recorder(server: Server) -> Recorder:
    return Recorder(server.url)


def _open(browser: Browser, server: Server, recorder: Recorder, name: str,
          signed_in: bool, enforce_csp: bool = False) -> Iterator[Page]:
    # The server's Content-Security-Policy forbids evaluating strings as script, which
    # Playwright's wait_for_function does inside the page: pages bypass it, except those of
    # tests/web/test_policy.py, which prove that the app and the docs load under it.
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True,
                                  base_url=server.url, bypass_csp=not enforce_csp)
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    if signed_in:
        pg.add_init_script(f"sessionStorage.setItem('drtrain-key', {json.dumps(server.key)})")
    pg.on("request", lambda r: recorder.on_request(r.url))
    pg.on("console", lambda m: recorder.on_console(m.type, m.text))
    pg.on("pageerror", lambda e: recorder.errors.append(f"uncaught: {e}"))
    try:
        yield pg
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        try:
            safe = re.sub(r"[^\w.-]+", "_", name)
            pg.screenshot(path=str(ARTIFACTS / f"{safe}.png"), full_page=True)
        except Exception as exc:  # noqa: BLE001 - a screenshot is a by-product
            print(f"screenshot failed: {exc}")
        context.close()
    assert not recorder.foreign, f"requests left the server's origin: {recorder.foreign}"
    assert not recorder.errors, f"console errors: {recorder.errors}"


@pytest.fixture
def page(browser: Browser, server: Server, recorder: Recorder,
         request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab, signed in (the key already in its session storage)."""
    yield from _open(browser, server, recorder, request.node.name, signed_in=True)


@pytest.fixture
def anon_page(browser: Browser, server: Server, recorder: Recorder,
              request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab with no key: the sign-in page."""
    yield from _open(browser, server, recorder, request.node.name, signed_in=False)


@pytest.fixture
def strict_page(browser: Browser, server: Server, recorder: Recorder,
                request: pytest.FixtureRequest) -> Iterator[Page]:
    """A signed-in tab under the server's Content-Security-Policy."""
    yield from _open(browser, server, recorder, request.node.name, signed_in=True,
                     enforce_csp=True)


@pytest.fixture
def strict_anon_page(browser: Browser, server: Server, recorder: Recorder,
                     request: pytest.FixtureRequest) -> Iterator[Page]:
    """A tab with no key under the server's Content-Security-Policy."""
    yield from _open(browser, server, recorder, request.node.name, signed_in=False,
                     enforce_csp=True)
