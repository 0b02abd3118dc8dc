"""Interactive API docs served from the package: Swagger UI at ``/docs`` and ReDoc at
``/redoc``, their scripts and styles from ``api/static/docs`` (swagger-ui-dist and redoc from
the npm registry; licences beside them), so the docs work on a machine with no internet and
make no request to another host.

Both pages satisfy the Content-Security-Policy of ``api/security_headers.py``: Swagger UI is
started by ``swagger-init.js`` (no inline script), and ReDoc by its own ``<redoc>`` element.
One change to the vendored ``redoc.standalone.js``: its side-menu footer drew the Redocly logo
from cdn.redoc.ly; that image is left out (the footer's text link stays)."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import FileResponse, HTMLResponse

ASSETS = Path(__file__).parent / "static" / "docs"
PREFIX = "/docs-assets"
_FILES = {"swagger-ui-bundle.js", "swagger-ui.css", "swagger-init.js", "redoc.standalone.js",
          "favicon-32x32.png"}

_SWAGGER_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>drtrain API</title>
<link rel="stylesheet" href="{PREFIX}/swagger-ui.css">
<link rel="icon" href="{PREFIX}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{PREFIX}/swagger-ui-bundle.js"></script>
<script src="{PREFIX}/swagger-init.js"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return HTMLResponse(_SWAGGER_PAGE)


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
