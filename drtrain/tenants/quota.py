"""Per-tenant storage quota (``DRTRAIN_TENANT_STORAGE_QUOTA_BYTES``; 0 = none).

A tenant's usage is what SQL records it holds: its datasets plus every checkpoint (final
models included) of its jobs. The quota is enforced where new data is admitted: an upload
that would pass it answers 413, and a new job or sweep while the tenant is at or over it
answers 429 (free space by deleting jobs or datasets). A running job may pass it by its own
checkpoints, which retention bounds to ``DRTRAIN_KEEP_CHECKPOINTS`` plus the final model.

The usage is a counter (``tenant_usage``, one row per tenant) that every statement adding or
removing a dataset or a checkpoint updates in its own transaction, so a check reads one row
whatever the tenant holds; ``counted_usage_bytes`` sums the tables, what the counter must
always equal.
"""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from drtrain.kit.errors import QuotaExceeded, QuotaExhausted
from drtrain.kit.models import Checkpoint, Dataset, DatasetStatus, Job
from drtrain.kit.settings import Settings
from drtrain.tenants import repository as repo


def usage_bytes(session: Session, tenant_id: str) -> int:
    return repo.storage_bytes(session, tenant_id)


def counted_usage_bytes(session: Session, tenant_id: str) -> int:
    """The usage summed from the tables (what ``usage_bytes`` keeps count of)."""
    # A failed upload keeps its row (to say why) but no object: it holds no storage.
    datasets = session.scalar(select(func.coalesce(func.sum(Dataset.size_bytes), 0))
                              .where(Dataset.tenant_id == tenant_id,
                                     Dataset.status != DatasetStatus.failed)) or 0
    checkpoints = session.scalar(
        select(func.coalesce(func.sum(Checkpoint.size_bytes), 0))
        .join(Job, Job.id == Checkpoint.job_id).where(Job.tenant_id == tenant_id)) or 0
    return int(datasets) + int(checkpoints)


def size_text(n: int) -> str:
    """Bytes in the largest binary unit that keeps the figure at 1 or more: 300 bytes,
    48.8 KiB, 1.5 GiB (a quota of some kilobytes read as "0.0 MiB")."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def check_upload(session: Session, settings: Settings, tenant_id: str, incoming: int) -> None:
    """413 when storing ``incoming`` more bytes would take the tenant past its quota."""
    quota = settings.tenant_storage_quota_bytes
    if not quota:
        return
    used = usage_bytes(session, tenant_id)
    if used + incoming > quota:
        # The title already says "Storage quota exceeded": the detail gives the figures.
        raise QuotaExceeded(
            f"this upload is {size_text(incoming)}, and the tenant already uses "
            f"{size_text(used)} of its {size_text(quota)} storage quota; delete jobs or "
            "datasets first")


def check_upload_locked(session: Session, settings: Settings, tenant_id: str,
                        incoming: int) -> None:
    """``check_upload`` under the tenant's lock, held until the commit that records the
    upload: concurrent uploads are counted one after another, each seeing those committed
    before it, so together they cannot pass the quota."""
    if settings.tenant_storage_quota_bytes:
        repo.lock_tenant(session, tenant_id)
        check_upload(session, settings, tenant_id, incoming)


def check_new_work(session: Session, settings: Settings, tenant_id: str) -> None:
    """429 when the tenant is at or over its quota (a new job would only add checkpoints)."""
    if settings.tenant_storage_quota_bytes:
        check_used(settings, usage_bytes(session, tenant_id))


def check_used(settings: Settings, used: int) -> None:
    """``check_new_work`` for a usage already read."""
    quota = settings.tenant_storage_quota_bytes
    if quota and used >= quota:
        raise QuotaExhausted(
            f"the tenant uses {size_text(used)} of its {size_text(quota)} storage quota; "
            "delete finished jobs (DELETE /v1/jobs/{id}) or datasets first")
