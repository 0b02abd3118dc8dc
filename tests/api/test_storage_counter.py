"""The storage quota's counter (``tenant_usage``): every statement that adds or removes a
dataset or a checkpoint keeps it equal to the sums it replaced, so the quota check on every
submit reads one row."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from drtrain.jobs import lifecycle, retention
from drtrain.kit.migrate import upgrade
from drtrain.kit.models import JobStatus
from drtrain.tenants import quota
from tests.factories import add_job, checked, tenant_id, upload

GOOD_CSV = b"a,b,label\n0,1,x\n1,0,y\n0.5,0.5,x\n"
ONE_CLASS_CSV = b"a,label\n1,x\n2,x\n"  # fails its check


def counted(db: Session, owner: str) -> int:
    """The counter, after proving it equals the sums over the tables."""
    db.expire_all()
    used = quota.usage_bytes(db, owner)
    assert used == quota.counted_usage_bytes(db, owner)
    return used


def test_uploads_failed_checks_and_deletes_keep_the_counter(client, db, auth_a) -> None:  # noqa: ANN001
    owner = tenant_id(db)
    assert counted(db, owner) == 0
    ready = checked(client, auth_a, upload(client, auth_a, GOOD_CSV, "good.csv"))
    assert ready["status"] == "ready"
    assert counted(db, owner) == ready["size_bytes"] > 0
    failed = checked(client, auth_a, upload(client, auth_a, ONE_CLASS_CSV, "one.csv"))
    assert failed["status"] == "failed"
    assert counted(db, owner) == ready["size_bytes"]  # a failed upload holds nothing
    assert client.delete(f"/v1/datasets/{failed['id']}", headers=auth_a).status_code == 204
    assert counted(db, owner) == ready["size_bytes"]
    assert client.delete(f"/v1/datasets/{ready['id']}", headers=auth_a).status_code == 204
    assert counted(db, owner) == 0


def _checkpoint(db: Session, job_id: str, kind: str, size: int, attempt: int = 1) -> object:
    ck = lifecycle.add_checkpoint(db, job_id, attempt, kind=kind, phase="pretrain", layer=0,
                                  epoch=size, object_key=f"jobs/{job_id}/{kind}-{size}",
                                  sha256="0" * 64, size_bytes=size)
    db.commit()
    return ck


def test_checkpoints_recorded_pruned_purged_and_deleted_keep_the_counter(
        client, db, store, auth_a, auth_b) -> None:  # noqa: ANN001
    owner, other = tenant_id(db), tenant_id(db, "tenant-b")
    job = add_job(db, owner, JobStatus.running, attempt=1)
    bystander = add_job(db, other, JobStatus.running, attempt=1)
    _checkpoint(db, bystander.id, "final", 7)
    for size in (100, 200, 300):
        _checkpoint(db, job.id, "epoch", size)
    assert counted(db, owner) == 600
    assert _checkpoint(db, job.id, "epoch", 1000, attempt=2) is None  # fenced out: not counted
    assert counted(db, owner) == 600
    retention.prune_resumable(db, job.id, keep=1)
    db.commit()
    assert counted(db, owner) == 300
    _checkpoint(db, job.id, "final", 50)
    assert lifecycle.finish(db, job.id, 1, JobStatus.succeeded, None)
    db.commit()
    retention.purge_ended(db, job.id)
    db.commit()
    assert counted(db, owner) == 50
    assert client.delete(f"/v1/jobs/{job.id}", headers=auth_a).status_code == 204
    assert counted(db, owner) == 0
    assert counted(db, other) == 7  # another tenant's counter is its own


def test_the_migration_counts_what_tenants_already_hold(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    upgrade(url, "0004")
    engine = create_engine(url)
    rows = [
        "INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'a', '2026-01-01'), "
        "('t2', 'b', '2026-01-01')",
        "INSERT INTO datasets (id, tenant_id, name, format, object_key, sha256, size_bytes, "
        "status, created_at) VALUES ('d1', 't1', 'x', 'csv', 'k1', 's', 100, 'ready', "
        "'2026-01-01'), ('d2', 't1', 'y', 'csv', 'k2', 's', 7, 'failed', '2026-01-01')",
        "INSERT INTO jobs (id, tenant_id, dataset_id, spec, status, progress, attempt, "
        "max_attempts, request_hash, cancel_requested, created_at, updated_at) VALUES "
        "('j1', 't1', 'builtin:digits', '{}', 'succeeded', 1, 1, 3, 'h', 0, '2026-01-01', "
        "'2026-01-01')",
        "INSERT INTO checkpoints (id, job_id, kind, attempt, object_key, sha256, size_bytes, "
        "created_at) VALUES ('c1', 'j1', 'final', 1, 'k3', 's', 30, '2026-01-01'), "
        "('c2', 'j1', 'epoch', 1, 'k4', 's', 12, '2026-01-01')",
    ]
    try:
        with engine.begin() as conn:
            for sql in rows:
                conn.execute(text(sql))
        upgrade(url)
        with engine.connect() as conn:
            usage = dict(conn.execute(text("SELECT tenant_id, storage_bytes FROM tenant_usage")
                                      ).tuples().all())
    finally:
        engine.dispose()
    assert usage == {"t1": 142, "t2": 0}
