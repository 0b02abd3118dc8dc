"""Interactive API docs served from the package: Swagger UI at ``/docs`` and ReDoc at
``/redoc``, their scripts and styles from ``api/static/docs`` (swagger-ui-dist and redoc from
the npm registry; licences beside them), so the docs work on a machine with no internet."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = Path(__file__).parent / "static" / "docs"
PREFIX = "/docs-assets"
_FILES = {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon-32x32.png"}

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title="drtrain API",
        swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js", swagger_css_url=f"{PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{PREFIX}/favicon-32x32.png",
        swagger_ui_parameters={"persistAuthorization": True})


@router.get("/redoc")
def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title="drtrain API",
                          redoc_js_url=f"{PREFIX}/redoc.standalone.js",
                          redoc_favicon_url=f"{PREFIX}/favicon-32x32.png", with_google_fonts=False)


@router.get(PREFIX + "/{name}")
def asset(name: str) -> FileResponse:
    # A fixed list: no path from the request ever reaches the filesystem.
    if name not in _FILES:
        raise HTTPException(status_code=404, detail=f"no docs asset {name!r}")
    return FileResponse(ASSETS / name, headers={"Cache-Control": "public, max-age=86400"})
