"""API keys: made once, shown once, stored only as a SHA-256."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from drtrain.kit.models import ApiKey, Tenant
from drtrain.tenants import repository as repo

KEY_PREFIX = "drt_"
# Enough of the key to find its row without a scan; far too little to guess the rest.
LOOKUP_CHARS = 12


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, tenant_name: str) -> str:
    """Make a key for ``tenant_name`` (creating the tenant if missing); returns it in clear."""
    tenant = repo.tenant_by_name(session, tenant_name) or repo.add_tenant(session, tenant_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant.id, prefix=key[:LOOKUP_CHARS], key_hash=hash_key(key)))
    session.flush()
    return key


def tenant_for_key(session: Session, key: str) -> Tenant | None:
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    wanted = hash_key(key)
    found: Tenant | None = None
    for row in repo.active_keys_with_prefix(session, key[:LOOKUP_CHARS]):
        # compare_digest so the answer time does not leak how much of a hash matched.
        if hmac.compare_digest(row.key_hash, wanted):
            found = session.get(Tenant, row.tenant_id)
    return found


@dataclass(frozen=True)
class KeyInfo:
    tenant: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def list_keys(session: Session, tenant_name: str | None = None) -> list[KeyInfo]:
    return [KeyInfo(name, key.prefix, key.created_at, key.revoked_at)
            for key, name in repo.keys_with_tenants(session, tenant_name)]


def revoke_key(session: Session, key_or_prefix: str) -> int:
    """Revoke the active keys whose prefix is the first LOOKUP_CHARS characters given; the
    number revoked (a full prefix names one key in practice)."""
    if len(key_or_prefix) < LOOKUP_CHARS:
        return 0
    return repo.revoke_keys_with_prefix(session, key_or_prefix[:LOOKUP_CHARS])
