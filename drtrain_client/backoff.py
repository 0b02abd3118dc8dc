"""How the client waits out "come back later" answers (429, 503): the server's Retry-After,
stretched by a random part so that many clients told the same delay do not all come back at
the same instant, never beyond a bound, a bounded number of times. Then the answer is
raised as a ``DrtrainError`` carrying ``retry_after`` and ``retries``."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import httpx

from drtrain_client.errors import retry_after_seconds

RETRYABLE = frozenset({429, 503})
# Problem types of a 429 that waiting does not clear: a full storage quota stays full until
# something is deleted.
LASTING = frozenset({"https://drtrain.dev/problems/storage-quota"})


def _lasting(response: httpx.Response) -> bool:
    if "json" not in response.headers.get("content-type", ""):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("type") in LASTING


@dataclass(frozen=True)
class Backoff:
    """``retries``: how many times one request is sent again (0: never). ``max_wait``: the
    longest single wait, in seconds. ``jitter``: each wait is the delay times a random factor
    between 1 and 1 + jitter (never shorter than the server asked). ``base``: the delay when
    the answer names none, doubled on each retry."""

    retries: int = 5
    max_wait: float = 30.0
    jitter: float = 0.5
    base: float = 1.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def wait(self, response: httpx.Response, done: int) -> float | None:
        """Seconds to wait before retry number ``done + 1``; None: raise the answer now."""
        if response.status_code not in RETRYABLE or done >= self.retries or _lasting(response):
            return None
        asked = retry_after_seconds(response)
        delay = asked if asked is not None else self.base * 2 ** done
        return min(self.max_wait, delay * (1 + self.rng.uniform(0, self.jitter)))
