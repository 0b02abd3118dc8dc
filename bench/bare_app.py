"""The baseline of bench/service.py: bare FastAPI routes, served by the same uvicorn command
as the API, doing no work beyond what any route must (parse, answer)."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI()


@app.get("/bare")
async def bare() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/bare")
async def bare_post(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"id": "0" * 32, "fields": len(body)}, status_code=202)
