"""Per-tenant concurrency limits and request-body timeouts: what keeps one tenant's idle or
slow connections from holding the API's resources."""
from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from drtrain.kit.errors import TooManyRequests

RETRY_AFTER_SECONDS = 5


class TenantSlots:
    """At most ``limit`` concurrent holders per tenant (uploads, event streams) in this process."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self._held: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def acquire(self, tenant_id: str) -> None:
        with self._lock:
            if self._held[tenant_id] >= self.limit:
                raise TooManyRequests(f"at most {self.limit} concurrent {self.what} per tenant",
                                      headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
            self._held[tenant_id] += 1

    def release(self, tenant_id: str) -> None:
        with self._lock:
            self._held[tenant_id] -= 1
            if self._held[tenant_id] <= 0:
                del self._held[tenant_id]

    def held(self, tenant_id: str) -> int:
        with self._lock:
            return self._held.get(tenant_id, 0)

    @contextmanager
    def hold(self, tenant_id: str) -> Iterator[None]:
        self.acquire(tenant_id)
        try:
            yield
        finally:
            self.release(tenant_id)


class BodyTimeoutMiddleware:
    """A request body must keep arriving: 408 when no chunk came for ``idle_seconds`` or the
    whole body took longer than ``total_seconds``. The handler reading the body gets the
    error, so whatever it holds is released, and the server then closes the connection
    (its body was not read to the end). Waiting for a disconnect once the body is complete
    (streaming responses do) is never timed."""

    def __init__(self, app: ASGIApp, idle_seconds: float, total_seconds: float) -> None:
        self.app = app
        self.idle_seconds = idle_seconds
        self.total_seconds = total_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        complete = False

        async def timed_receive() -> Message:
            nonlocal deadline, complete
            if complete:
                return await receive()
            now = anyio.current_time()
            if deadline is None:
                deadline = now + self.total_seconds
            message: Message = {}
            with anyio.move_on_after(min(self.idle_seconds, max(deadline - now, 0.0))) as timer:
                message = await receive()
            if timer.cancelled_caught:
                complete = True
                raise HTTPException(408, "the request body stalled or took too long to arrive",
                                    headers={"Connection": "close"})
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)
