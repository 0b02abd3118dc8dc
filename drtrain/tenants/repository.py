"""The queries for tenants and their API keys."""
from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from drtrain.kit.models import ApiKey, Tenant, utcnow


def tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()


def add_tenant(session: Session, name: str) -> Tenant:
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant


def active_keys_with_prefix(session: Session, prefix: str) -> Sequence[ApiKey]:
    return session.scalars(
        select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))).all()


def lock_tenant(session: Session, tenant_id: str) -> None:
    """Serialises concurrent submits of one tenant so the active-job cap cannot be overshot
    (FOR UPDATE is a no-op on SQLite, whose writers are serial anyway)."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())


def keys_with_tenants(session: Session, tenant_name: str | None) -> list[tuple[ApiKey, str]]:
    stmt = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id)
    if tenant_name is not None:
        stmt = stmt.where(Tenant.name == tenant_name)
    return [(key, name) for key, name in
            session.execute(stmt.order_by(Tenant.name, ApiKey.created_at)).tuples()]


def revoke_keys_with_prefix(session: Session, prefix: str) -> int:
    result = session.execute(update(ApiKey).where(ApiKey.prefix == prefix,
                                                  ApiKey.revoked_at.is_(None))
                             .values(revoked_at=utcnow()))
    return int(getattr(result, "rowcount", 0))
