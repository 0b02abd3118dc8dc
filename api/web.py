"""The web app at ``/``: the single-page app built from ``web/`` into ``api/static/app/``
(``cd web && npm run build``), shipped in the package. ``/`` answers its index.html and
``/app/...`` its assets; the app calls the JSON API with the user's key. Nothing is fetched
from another host."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

APP_DIR = Path(__file__).parent / "static" / "app"
_assets = StaticFiles(directory=APP_DIR, check_dir=False)

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard() -> Response:
    index = APP_DIR / "index.html"
    if not index.is_file():
        return HTMLResponse("<h1>drtrain</h1><p>The web app is not built: run <code>npm ci && "
                            "npm run build</code> in <code>web/</code>. The API is at /v1/jobs, "
                            "its docs at <a href='/docs'>/docs</a>.</p>", status_code=503)
    # Asset names carry a content hash; the page that names them must never be stale.
    return HTMLResponse(index.read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})


@router.get("/app/{path:path}")
async def asset(path: str, request: Request) -> Response:
    # StaticFiles refuses paths outside APP_DIR and answers ETag / If-None-Match itself.
    response = await _assets.get_response(path, request.scope)
    if path.startswith("assets/") and response.status_code == 200:
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response
