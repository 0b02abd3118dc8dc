"""The built app in api/static/app/ is what web/ builds to, and the API serves it safely."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import httpx

from tests.web.server import REPO, Server

WEB = REPO / "web"
BUILT = REPO / "api" / "static" / "app"
SOURCES = ["index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts",
           "src", "public"]


def sources_digest() -> str:
    """The same digest web/vite.config.ts writes into build-info.json."""
    files: list[Path] = []
    for name in SOURCES:
        path = WEB / name
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    h = hashlib.sha256()
    for rel in sorted(p.relative_to(WEB).as_posix() for p in files):
        h.update(rel.encode() + b"\0" + (WEB / rel).read_bytes() + b"\0")
    return h.hexdigest()


def test_built_app_is_fresh() -> None:
    info = json.loads((BUILT / "build-info.json").read_text())
    assert info["sources_sha256"] == sources_digest(), (
        "web/ changed since api/static/app/ was built: run `cd web && npm ci && npm run build` "
        "and commit api/static/app/")


def test_index_names_only_packaged_assets() -> None:
    html = (BUILT / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert not [r for r in refs if not r.startswith("/") or r.startswith("//")], refs  # no other host
    assets = [r for r in refs if r.startswith("/app/")]
    assert len(assets) >= 3, refs  # icon, script, style sheet
    for ref in assets:
        assert (BUILT / ref.removeprefix("/app/")).is_file(), ref


def test_server_serves_the_app_and_its_assets(server: Server) -> None:
    html = httpx.get(server.url + "/")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert html.headers["cache-control"] == "no-cache"
    assets = re.findall(r'"(/app/assets/[^"]+)"', html.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        r = httpx.get(server.url + asset)
        assert r.status_code == 200, asset
        assert "immutable" in r.headers["cache-control"]
        assert r.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript",
                                                           "text/css")
        again = httpx.get(server.url + asset, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
    missing = httpx.get(server.url + "/app/assets/nope.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    for escape in ("/app/..%2f..%2fweb.py", "/app/%2e%2e/%2e%2e/web.py"):
        assert httpx.get(server.url + escape).status_code == 404, escape
