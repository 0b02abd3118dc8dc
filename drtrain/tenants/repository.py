"""The queries for tenants and their API keys."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, bindparam, literal, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from drtrain.kit.models import ApiKey, Job, Tenant, TenantUsage, utcnow


def tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()


def add_tenant(session: Session, name: str) -> Tenant:
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant


def active_key_rows(session: Session, prefix: str) -> Sequence[tuple[str, str, str, datetime]]:
    """(key hash, tenant id, tenant name, tenant created_at) of the active keys with this
    prefix: the key check in one query."""
    return session.execute(
        select(ApiKey.key_hash, Tenant.id, Tenant.name, Tenant.created_at)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))).tuples().all()


def _advisory_key(tenant_id: str) -> int:
    """A signed 64-bit number naming "the job slots of this tenant" for pg_advisory locks."""
    return int.from_bytes(hashlib.sha256(f"drtrain.jobs:{tenant_id}".encode()).digest()[:8],
                          "big", signed=True)


_PG_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_SQLITE_LOCK = text("UPDATE tenants SET name = name WHERE id = :id")


def lock_tenant(session: Session, tenant_id: str) -> None:
    """Serialises the "count active jobs, then insert" step of one tenant's submits so the
    active-job cap cannot be overshot, until the transaction ends; call it last, right before
    the count, and commit right after the insert.

    PostgreSQL: a transaction-scoped advisory lock. Unlike ``SELECT ... FOR UPDATE`` on the
    tenant row it blocks nothing else (inserting a job or a dataset takes a key-share lock on
    that row, which FOR UPDATE would make wait). SQLite: a no-op write, which takes the
    database's single write lock now; SQLite runs the earlier reads outside a transaction, so
    without it two submits could both count before either writes."""
    conn = session.connection()  # Core statements: no ORM execution around a one-liner
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(_PG_LOCK, {"key": _advisory_key(tenant_id)})
    elif dialect == "sqlite":
        conn.execute(_SQLITE_LOCK, {"id": tenant_id})
    else:
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


def storage_bytes(session: Session, tenant_id: str) -> int:
    """The tenant's counted storage (``TenantUsage``): one primary-key read."""
    return int(session.connection().execute(_STORAGE_BYTES, {"tenant_id": tenant_id}
                                            ).scalar() or 0)


_STORAGE_BYTES = select(TenantUsage.storage_bytes).where(
    TenantUsage.tenant_id == bindparam("tenant_id"))


def _upsert(session: Session, stmt: Any) -> None:
    """Add ``excluded.storage_bytes`` to the tenant's row, creating it if missing: one
    statement, atomic under concurrent writers (the row lock is held until the commit)."""
    stmt = stmt.on_conflict_do_update(
        index_elements=[TenantUsage.tenant_id],
        set_={"storage_bytes": TenantUsage.storage_bytes + stmt.excluded.storage_bytes})
    session.execute(stmt)


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(TenantUsage)
    if dialect == "sqlite":
        return sqlite.insert(TenantUsage)
    raise NotImplementedError(f"no storage counter upsert for {dialect}")


def add_storage(session: Session, tenant_id: str, delta: int) -> None:
    """Count ``delta`` more bytes (negative: fewer) against the tenant's quota. Call it in
    the transaction that adds or removes the rows holding them, after their other writes."""
    if delta:
        _upsert(session, _insert(session).values(tenant_id=tenant_id, storage_bytes=delta))


def add_job_storage(session: Session, job_id: str, delta: int) -> None:
    """``add_storage`` for the tenant owning ``job_id`` (its checkpoints' bytes)."""
    if delta:
        # The WHERE also keeps SQLite's INSERT ... SELECT ... ON CONFLICT unambiguous.
        source = select(Job.tenant_id, literal(delta, BigInteger)).where(Job.id == job_id)
        _upsert(session, _insert(session).from_select(["tenant_id", "storage_bytes"], source))
