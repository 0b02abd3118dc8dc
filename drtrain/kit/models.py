"""SQLAlchemy 2 typed models. The schema itself comes only from Alembic (migrations/)."""
from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)  # noqa: UP017 - UTC below names the column type


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always aware UTC on the way in and out, on every database.

    SQLite keeps no offset and hands back naive values, and PostgreSQL answers in the
    session's time zone; without this the embedded API wrote ``...T12:00:00`` where
    production wrote ``...T12:00:00Z``. Naive input is taken to be UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


def as_utc(value: datetime) -> datetime:
    if value.tzinfo is timezone.utc:  # noqa: UP017
        return value  # already what we want: no conversion per row
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)  # noqa: UP017
    return value.astimezone(timezone.utc)  # noqa: UP017


UTC = UTCDateTime()


class JobStatus(enum.StrEnum):
    """A job's status; listed in lifecycle order (how the web app's filter lists them)."""

    queued = "queued"
    running = "running"
    cancelling = "cancelling"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


# Every list of statuses derives from JobStatus: the job ends in one of TERMINAL_STATUSES and
# nothing moves it on; the others are ACTIVE_STATUSES. JOB_STATUS_PATTERN matches exactly one
# status's name (a query parameter's check).
TERMINAL_STATUSES = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
ACTIVE_STATUSES = tuple(s for s in JobStatus if s not in TERMINAL_STATUSES)
JOB_STATUSES = tuple(s.value for s in JobStatus)
JOB_STATUS_PATTERN = "^(" + "|".join(JOB_STATUSES) + ")$"

# The phases of training a job reports (its ``phase``, a metric point's, a checkpoint's):
# dr_core/events.py's PHASES, copied because the domain may not import dr_core
# (tests/test_lists.py holds the two equal).
PHASES = ("pretrain", "finetune")


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTC, default=utcnow)


class TenantUsage(Base):
    """The bytes a tenant's storage quota counts (its datasets, failed ones aside, plus every
    checkpoint of its jobs), kept up to date by the statements that add or remove them
    (``drtrain.tenants.repository.add_storage``), so the quota check reads one row instead of
    summing two tables on every submit. No row means nothing stored."""

    __tablename__ = "tenant_usage"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"),
                                           primary_key=True)
    storage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class ApiKey(Base):
    """Only a SHA-256 of the key is stored; ``prefix`` (first chars) finds the row."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTC, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)


class DatasetStatus(enum.StrEnum):
    """An upload is ``validating`` from its 202 until its check ends: ``ready`` (usable by
    jobs, summary filled in) or ``failed`` (``status_reason`` says why; nothing stored)."""

    validating = "validating"
    ready = "ready"
    failed = "failed"


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(16))  # csv | npz | idx
    object_key: Mapped[str] = mapped_column(String(300))
    labels_object_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    label_column: Mapped[str | None] = mapped_column(String(200), nullable=True)
    side_info_column: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[DatasetStatus] = mapped_column(String(16), default=DatasetStatus.ready,
                                                  server_default=DatasetStatus.ready.value)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The summary: known once the check has passed (null while validating, or if it failed).
    n_samples: Mapped[int | None] = mapped_column(Integer, nullable=True)
    n_features: Mapped[int | None] = mapped_column(Integer, nullable=True)
    n_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    class_counts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    feature_range: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    visible_units_hint: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Rows that carry a label, and a side value (the label when there is no side column).
    n_labelled: Mapped[int | None] = mapped_column(Integer, nullable=True)
    n_with_side: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # A CSV's feature columns by name, in order (null for formats that name none).
    feature_names: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTC, default=utcnow)


class Sweep(Base):
    __tablename__ = "sweeps"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    base: Mapped[dict[str, Any]] = mapped_column(JSON)
    grid: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTC, default=utcnow)


# A job waiting in its tenant's queue: queued, not yet given a running slot.
WAITING_SQL = "status = 'queued' AND dispatched_at IS NULL"


class Job(Base):
    """The truth about a job. Every status change is a conditional UPDATE on the expected
    status (and, from a worker, on the attempt that holds the lease)."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        # A submit counts the tenant's active jobs under its lock: an index range, not a
        # walk over every job the tenant ever ran.
        Index("ix_jobs_tenant_status", "tenant_id", "status"),
        # The reaper finds ended jobs whose metric history is due for downsampling: only jobs
        # not yet downsampled are in this index (the active ones and the recently ended).
        Index("ix_jobs_history_due", "finished_at",
              postgresql_where=text("metrics_downsampled_at IS NULL"),
              sqlite_where=text("metrics_downsampled_at IS NULL")),
        # The tenants' queues (drtrain/jobs/queue.py): only the jobs waiting for a running
        # slot are in it, in the order they are dispatched.
        Index("ix_jobs_waiting", "tenant_id", "created_at", "id",
              postgresql_where=text(WAITING_SQL), sqlite_where=text(WAITING_SQL)),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    dataset_id: Mapped[str] = mapped_column(String(64))  # a dataset id or "builtin:<name>"
    test_dataset_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweeps.id", ondelete="SET NULL"),
                                                 nullable=True, index=True)
    grid_point: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)

    status: Mapped[JobStatus] = mapped_column(String(16), default=JobStatus.queued)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    phase: Mapped[str | None] = mapped_column(String(16), nullable=True)
    layer: Mapped[int | None] = mapped_column(Integer, nullable=True)
    epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)

    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    # When the job took one of its tenant's running slots and was sent to the workers; null
    # while it waits in the tenant's queue (drtrain/jobs/queue.py).
    dispatched_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTC, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTC, default=utcnow, onupdate=utcnow)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Copied from the spec at submit: shown in lists without reading the spec.
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # What looked wrong at submit (tiny validation set, DR with one group, ...).
    warnings: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # When its metric curves were downsampled (drtrain/jobs/history.py); null until then.
    metrics_downsampled_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)


class JobTag(Base):
    """One row per (job, tag), so ``GET /v1/jobs?tag=`` is an indexed lookup on any database."""

    __tablename__ = "job_tags"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    job: Mapped[Job] = relationship()


class MetricPoint(Base):
    """One value of one metric. ``seq`` orders a job's points (SSE ids, ``?since=``); the
    natural key makes a resumed attempt unable to write a point twice."""

    __tablename__ = "metric_points"
    __table_args__ = (
        UniqueConstraint("job_id", "seq"),
        UniqueConstraint("job_id", "phase", "layer_key", "epoch", "name",
                         name="uq_metric_points_natural"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(16))
    layer: Mapped[int | None] = mapped_column(Integer, nullable=True)
    layer_key: Mapped[int] = mapped_column(Integer)  # layer, or -1 for none (NULLs are never equal)
    epoch: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UTC, default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (
        # The reaper looks for ended jobs that still hold resumable checkpoints every round;
        # only the few rows of running (or not yet swept) jobs are in this index, so the
        # query stays small however long the history of final models grows.
        Index("ix_checkpoints_resumable", "job_id",
              postgresql_where=text("kind IN ('layer', 'epoch')"),
              sqlite_where=text("kind IN ('layer', 'epoch')")),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # layer | epoch | final
    phase: Mapped[str | None] = mapped_column(String(16), nullable=True)
    layer: Mapped[int | None] = mapped_column(Integer, nullable=True)
    epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    attempt: Mapped[int] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTC, default=utcnow)


class JobLogLine(Base):
    """One line of what the worker logged while it ran one attempt of a job (``line`` counts
    from 0 within the attempt). A bounded number of bytes per attempt: ``drtrain.jobs.logs``."""

    __tablename__ = "job_log_lines"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"),
                                        primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTC, default=utcnow)
