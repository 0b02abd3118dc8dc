"""How the shortcuts (``api/fast_reads.py``, ``api/fast_submit.py``) know a caller without
FastAPI's dependencies: a bearer key read as ``HTTPBearer`` reads it, from the key cache or,
when it is not there, by the lookup the route makes (one query for everyone asking at once),
and only while its address is not over its failed-auth budget. A key that is unknown or
revoked, a lookup that fails and an address over its budget are the route's to answer (401,
its error, 429): it counts the failure as it always has."""
from __future__ import annotations

from typing import Any

from starlette.types import Scope

from api.deps import look_up_key
from drtrain.tenants.keys import KeyCache


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, as FastAPI's HTTPBearer reads it."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    key = credentials.strip()
    return key if scheme.lower() == "bearer" and key else None


async def lane_tenant_id(state: Any, scope: Scope, key: str | None) -> str | None:
    """The tenant id of a known key, or None when the route must answer."""
    if not key:
        return None
    limiter = getattr(state, "auth_limiter", None)
    client = scope.get("client")
    if (limiter is not None
            and limiter.retry_after(client[0] if client else "unknown") is not None):
        return None  # over its failed-auth budget: the route answers 429
    cache: KeyCache = state.key_cache
    ref = cache.get(key)
    if ref is None:
        # Not left to the route: after a quiet spell (the entry expired) a crowd arriving at
        # once would all take the route's slower path and queue behind each other there.
        try:
            ref = await look_up_key(state, key)
        except Exception:  # noqa: BLE001 - the route meets the error and answers it
            return None
        if ref is None:
            return None  # unknown or revoked: the route's 401
        cache.put(key, ref)
    return ref.id
