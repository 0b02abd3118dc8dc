"""API keys (``drtrain.tenants.keys``): shown once, stored as hashes, one tenant each."""
from __future__ import annotations

import hashlib

from sqlalchemy import select

from drtrain.kit.models import ApiKey, Tenant
from drtrain.tenants.keys import create_key, tenant_for_key


def test_key_is_stored_only_as_a_hash(db):
    key = create_key(db, "acme")
    assert key.startswith("drt_") and len(key) >= 40
    rows = db.scalars(select(ApiKey)).all()
    assert len(rows) == 1
    assert rows[0].key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in (rows[0].key_hash, rows[0].prefix)
    assert key.startswith(rows[0].prefix)


def test_key_finds_its_tenant_and_only_its_tenant(db):
    key_a1 = create_key(db, "a")
    key_a2 = create_key(db, "a")  # a second key for the same tenant, not a second tenant
    key_b = create_key(db, "b")
    assert len(db.scalars(select(Tenant)).all()) == 2
    assert key_a1 != key_a2
    assert tenant_for_key(db, key_a1).name == "a"
    assert tenant_for_key(db, key_a2).name == "a"
    assert tenant_for_key(db, key_b).name == "b"


def test_wrong_keys_find_nothing(db):
    key = create_key(db, "a")
    assert tenant_for_key(db, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert tenant_for_key(db, key + "x") is None
    assert tenant_for_key(db, "") is None
    assert tenant_for_key(db, "drt_") is None
    assert tenant_for_key(db, "x" * 10_000) is None
