"""A per-client-address limit on failed authentications (wrong API key, wrong metrics token).

An address that has failed ``DRTRAIN_AUTH_FAILURES_PER_WINDOW`` times within the last
``DRTRAIN_AUTH_FAILURE_WINDOW_SECONDS`` answers 429 with ``Retry-After`` on every
authenticated route until its oldest failure leaves the window, even with a valid key (so
the answer never tells a guesser that it has found one). A request without any credentials
is a failure too: it is refused before its body is read (``api/body_gate.py``), and a client
sending large bodies with no key is held back like one guessing keys. State is in process
memory, per API process, and bounded: at most ``MAX_CLIENTS`` addresses, least recently
failed forgotten first.

The address is the peer of the connection, or the one a trusted proxy reports when the API
runs behind one (uvicorn ``--proxy-headers``, ``--forwarded-allow-ips``).
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from fastapi import Request

from drtrain.kit.errors import TooManyAuthFailures
from drtrain.kit.settings import Settings

MAX_CLIENTS = 10_000


class FailedAuthLimiter:
    def __init__(self, limit: int, window: float, *, max_clients: int = MAX_CLIENTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.max_clients, self._clock = limit, window, max_clients, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def retry_after(self, client: str) -> float | None:
        """Seconds until ``client`` may try again, or None when it is not blocked."""
        now = self._clock()
        with self._lock:
            times = self._recent(client, now)
            if times is None or len(times) < self.limit:
                return None
            return max(times[-self.limit] + self.window - now, 0.001)

    def record_failure(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            times = self._recent(client, now) or deque()
            times.append(now)
            while len(times) > self.limit:  # older ones no longer decide anything
                times.popleft()
            self._failures[client] = times
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)


_create_lock = threading.Lock()


def limiter(request: Request) -> FailedAuthLimiter:
    """The app's limiter, made on first use from its settings."""
    state = request.app.state
    found = getattr(state, "auth_limiter", None)
    if found is None:
        with _create_lock:
            found = getattr(state, "auth_limiter", None)
            if found is None:
                settings: Settings = state.settings
                found = state.auth_limiter = FailedAuthLimiter(
                    settings.auth_failures_per_window, settings.auth_failure_window_seconds)
    return found


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def check(request: Request) -> None:
    """429 with Retry-After while this client address is over its failed-auth budget."""
    wait = limiter(request).retry_after(client_address(request))
    if wait is not None:
        seconds = math.ceil(wait)
        raise TooManyAuthFailures(
            f"too many failed authentications from this address; retry in {seconds} s",
            headers={"Retry-After": str(seconds)})


def failed(request: Request) -> None:
    """Count one failed authentication against this client address."""
    limiter(request).record_failure(client_address(request))
