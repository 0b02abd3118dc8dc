"""The baseline of bench/service.py: bare FastAPI routes, served by the same uvicorn command
as the API, doing no work beyond what any route must (parse, answer)."""
from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/bare")
async def bare() -> dict[str, str]:
    return {"status": "ok"}
