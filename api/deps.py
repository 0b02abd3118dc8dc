"""Request dependencies: the database, the caller's tenant, settings and the object store.

Why the database is reached the way it is: a request may hold a pooled connection
only inside one thread hop that runs to its end. ``Database.run`` opens a session, runs one
service function, commits and closes, all in one worker thread; the key check uses its own
such hop (or, mostly, the key cache and no hop at all). No connection is ever held while a
request waits for a thread, so no number of clients can deadlock the pool against anyio's
thread limiter, and both are sized from ``DRTRAIN_API_THREADS`` (``api.app``).

``SessionDep`` (a request-long session committed after the handler) remains for the sync
handlers that still use it; it opens no connection until the handler's first query.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from api import auth_limits
from api.limits import TenantSlots
from drtrain.kit.db import reader_of, session_scope
from drtrain.kit.errors import Unauthorized
from drtrain.kit.models import Tenant
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore
from drtrain.tenants.keys import KeyCache, TenantRef, tenant_ref_for_key

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)

_bearer = HTTPBearer(auto_error=False, description="An API key: `drtrain keys create`")


# The small dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in a
# worker thread, a hop per request for nothing.
async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


class Database:
    """A read in one thread hop with a session of its own, for a dependency that must not
    hold the request's session (the key lookup). Handlers use ``SessionDep`` or the app's
    ``JobReads`` (docs/architecture.md, "One idiom per kind of route")."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    async def read(self, query: Callable[..., R], *args: Any) -> R:
        """``query(session, *args)``; the session is in autocommit (each statement sees the
        latest committed rows) and closed before the hop returns."""
        return await anyio.to_thread.run_sync(_read, reader_of(self.factory), query, args)


def _read(factory: sessionmaker[Session], query: Callable[..., R], args: tuple[Any, ...]) -> R:
    with factory() as session:
        return query(session, *args)


def session_for_request(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Commit when the handler returned, roll back when it raised; then run the
    after-commit hooks (publishing a job message only once its row is durable)."""
    with session_scope(factory) as session:
        yield session


def get_session(request: Request) -> Iterator[Session]:
    yield from session_for_request(request.app.state.sessionmaker)


# scope="function": commit before the response is sent, so a client that got 201/202
# can never read a row that is not there yet.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def get_store(request: Request) -> ObjectStore:
    return request.app.state.store


StoreDep = Annotated[ObjectStore, Depends(get_store)]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def get_tenant(request: Request,
                     credentials: Annotated[HTTPAuthorizationCredentials | None,
                                            Depends(_bearer)]) -> Tenant:
    """The key's tenant: from the per-process cache (``DRTRAIN_AUTH_CACHE_SECONDS``), else by
    one query in a short session of its own, closed before the handler runs."""
    auth_limits.check(request)  # failed-auth limiter (api/auth_limits.py): 429 + Retry-After
    if credentials is None:
        auth_limits.failed(request)  # a request without a key is a failed one too
        raise Unauthorized("missing Authorization: Bearer <api key>", headers=_CHALLENGE)
    key = credentials.credentials
    cache: KeyCache = request.app.state.key_cache
    ref: TenantRef | None = cache.get(key)
    if ref is None:
        # Not a sub-dependency: each one costs FastAPI's resolver time on every request.
        ref = await look_up_key(request.app.state, key)
        if ref is None:
            auth_limits.failed(request)  # failed-auth limiter (api/auth_limits.py)
            raise Unauthorized("unknown or revoked API key", headers=_CHALLENGE)
        cache.put(key, ref)
    return ref.as_tenant()


async def tenant_of(request: Request) -> Tenant:
    """``get_tenant`` outside FastAPI's dependency resolution (``api/body_gate.py``)."""
    return await get_tenant(request, await _bearer(request))


async def shared_call(pending: dict[K, asyncio.Future[T]], key: K,
                      start: Callable[[], Awaitable[T]]) -> T:
    """``await start()``, or the call already running for ``key``: callers that ask at once
    share one. The call is a task of its own, so a caller that goes away (a client
    disconnecting) cancels only its own wait."""
    call = pending.get(key)
    if call is None:
        call = pending[key] = asyncio.ensure_future(start())
        call.add_done_callback(lambda _done: pending.pop(key, None))
    return await asyncio.shield(call)


async def look_up_key(state: Any, key: str) -> TenantRef | None:
    """The key's tenant by one query per key however many requests miss the cache at once
    (500 event streams connecting as the entry expires); ``state`` is the app's."""
    return await shared_call(state.key_lookups, key, lambda: Database(
        state.sessionmaker).read(tenant_ref_for_key, key))


TenantDep = Annotated[Tenant, Depends(get_tenant)]
# The request's bearer credentials, as get_tenant read them (FastAPI resolves them once).
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def key_still_valid(state: Any, key: str) -> Callable[[], Awaitable[bool]]:
    """A check that ``key`` still opens its tenant, for a request that outlives its key check
    (an event stream). A key cache entry is at most ``DRTRAIN_AUTH_CACHE_SECONDS`` old, so a
    key revoked more than that long ago is never found there: it is looked up again (one
    query per key however many streams ask at once) and found revoked."""
    async def still_valid() -> bool:
        cache: KeyCache = state.key_cache
        if cache.get(key) is not None:
            return True
        ref = await look_up_key(state, key)
        if ref is None:
            return False
        cache.put(key, ref)
        return True
    return still_valid


async def upload_slot(request: Request, tenant: TenantDep) -> AsyncIterator[None]:
    """One of the tenant's ``DRTRAIN_MAX_UPLOADS_PER_TENANT`` concurrent uploads (429 beyond),
    held until the handler returns."""
    slots: TenantSlots = request.app.state.upload_slots
    with slots.hold(tenant.id):
        yield


UploadSlotDep = Annotated[None, Depends(upload_slot, scope="function")]
