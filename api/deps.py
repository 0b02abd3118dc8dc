"""Request dependencies. ``get_session`` is the one owner of commit for HTTP requests."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from drtrain.kit.db import session_scope
from drtrain.kit.errors import Unauthorized
from drtrain.kit.models import Tenant
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore
from drtrain.tenants.keys import tenant_for_key

_bearer = HTTPBearer(auto_error=False, description="An API key: `drtrain keys create`")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


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
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_store(request: Request) -> ObjectStore:
    return request.app.state.store


StoreDep = Annotated[ObjectStore, Depends(get_store)]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_tenant(session: SessionDep,
               credentials: Annotated[HTTPAuthorizationCredentials | None,
                                      Depends(_bearer)]) -> Tenant:
    if credentials is None:
        raise Unauthorized("missing Authorization: Bearer <api key>", headers=_CHALLENGE)
    tenant = tenant_for_key(session, credentials.credentials)
    if tenant is None:
        raise Unauthorized("unknown or revoked API key", headers=_CHALLENGE)
    return tenant


TenantDep = Annotated[Tenant, Depends(get_tenant)]
