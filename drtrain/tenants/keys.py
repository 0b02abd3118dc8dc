"""API keys: made once, shown once, stored only as a SHA-256."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
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


@dataclass(frozen=True)
class TenantRef:
    """What a request needs of its tenant: small, immutable, safe to share between threads."""

    id: str
    name: str
    created_at: datetime

    def as_tenant(self) -> Tenant:
        """A transient (never added to a session) Tenant for code that takes one."""
        return Tenant(id=self.id, name=self.name, created_at=self.created_at)


def _well_formed(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and len(key) <= 200


def tenant_ref_for_key(session: Session, key: str) -> TenantRef | None:
    """The key check in one query: the active key with this key's hash, and its tenant."""
    if not _well_formed(key):
        return None
    wanted = hash_key(key)
    found: TenantRef | None = None
    for key_hash, tenant_id, name, created_at in repo.active_key_rows(session, key[:LOOKUP_CHARS]):
        # compare_digest so the answer time does not leak how much of a hash matched.
        if hmac.compare_digest(key_hash, wanted):
            found = TenantRef(tenant_id, name, created_at)
    return found


def tenant_for_key(session: Session, key: str) -> Tenant | None:
    ref = tenant_ref_for_key(session, key)
    return None if ref is None else ref.as_tenant()


class KeyCache:
    """key hash -> tenant for ``ttl`` seconds, so most requests check their key without a
    query. A key revoked (in any process) keeps working for at most ``ttl`` seconds in a
    process that has it cached; only found keys are cached, so a new key works at once.
    Bounded: the least recently used entries go first."""

    def __init__(self, ttl: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, TenantRef]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> TenantRef | None:
        if self.ttl <= 0 or not _well_formed(key):
            return None
        digest = hash_key(key)
        with self._lock:
            hit = self._entries.get(digest)
            if hit is None:
                return None
            if hit[0] <= self._clock():
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return hit[1]

    def put(self, key: str, ref: TenantRef) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[hash_key(key)] = (self._clock() + self.ttl, ref)
            self._entries.move_to_end(hash_key(key))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


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
