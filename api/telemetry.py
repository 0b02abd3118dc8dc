"""In-process request counters for ``/metrics`` (no Prometheus client library needed)."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count: dict[tuple[str, str, str], int] = defaultdict(int)
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.observed: dict[tuple[str, str], int] = defaultdict(int)

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.count[(method, route, str(status))] += 1
            self.seconds[(method, route)] += seconds
            self.observed[(method, route)] += 1

    def snapshot(self) -> tuple[dict, dict, dict]:
        with self._lock:
            return dict(self.count), dict(self.seconds), dict(self.observed)


class RequestStatsMiddleware:
    """Counts by route template (``/v1/jobs/{job_id}``), never by raw path, so the
    number of series stays bounded whatever ids clients send."""

    def __init__(self, app: ASGIApp, stats: RequestStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.stats.record(scope["method"], template, status, time.perf_counter() - started)
