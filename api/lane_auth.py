"""How the fast lanes (``api/fast_reads.py``, ``api/fast_submit.py``) know a caller without
FastAPI's dependencies: a bearer key read as ``HTTPBearer`` reads it, taken only when it is
already in the key cache and its address is not over its failed-auth budget. Any other case
is the route's (it answers 401, 429, or looks the key up and caches it)."""
from __future__ import annotations

from typing import Any

from starlette.types import Scope

from drtrain.tenants.keys import KeyCache


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, as FastAPI's HTTPBearer reads it."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    key = credentials.strip()
    return key if scheme.lower() == "bearer" and key else None


def cached_tenant_id(state: Any, scope: Scope, key: str | None) -> str | None:
    """The tenant id of a cached key, or None when the route must answer."""
    limiter = getattr(state, "auth_limiter", None)
    client = scope.get("client")
    if (limiter is not None
            and limiter.retry_after(client[0] if client else "unknown") is not None):
        return None  # over its failed-auth budget: the route answers 429
    cache: KeyCache = state.key_cache
    ref = cache.get(key) if key else None
    return None if ref is None else ref.id
