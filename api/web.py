"""The dashboard at ``/``: one static page that calls the JSON API with the user's key."""
from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard() -> HTMLResponse:
    return HTMLResponse(files("api").joinpath("static/index.html").read_text(encoding="utf-8"))
