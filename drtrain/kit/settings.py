"""The one settings object. Nothing else in drtrain reads the environment."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRTRAIN_", extra="ignore")

    data_dir: Path = Path(".drtrain")
    # Empty means "embedded default inside data_dir" (resolved by the properties below).
    database_url: str = ""
    broker_url: str = ""
    storage_url: str = ""
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    # SecretStr: repr/str of the settings (and any log or traceback showing them) hide it.
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = "us-east-1"
    presign_seconds: int = Field(300, ge=10, le=86400)

    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    # What a dataset may inflate to (NPZ/IDX arrays, and the float32 features a worker holds
    # to train): set it to the memory one job can afford. Checking an upload streams it.
    max_decompressed_bytes: int = Field(2 * 1024 * 1024 * 1024, ge=1024)
    # Distinct labels one dataset may hold (422 beyond): every listing carries the class table.
    max_classes: int = Field(1000, ge=2, le=100_000)
    # Uploads are checked after the 202, in processes of their own (drtrain.datasets.validation):
    # this many at once per API process, each stopped past the time and memory given here.
    upload_validators: int = Field(2, ge=1, le=64)
    upload_validation_seconds: float = Field(600.0, gt=0)
    upload_validation_memory_bytes: int = Field(2 * 1024 * 1024 * 1024, ge=0)
    max_attempts: int = Field(3, ge=1, le=10)
    heartbeat_seconds: float = Field(5.0, gt=0)
    lease_seconds: float = Field(30.0, gt=0)
    requeue_queued_after_seconds: float = Field(60.0, gt=0)
    cancel_grace_seconds: float = Field(30.0, gt=0)
    # The API's threads (anyio's limiter) and its database pool are sized from this one
    # number, so a request never waits for a connection that a thread-starved request holds.
    api_threads: int = Field(16, ge=1, le=256)
    db_pool_timeout_seconds: float = Field(5.0, gt=0, le=120)
    # A key's tenant is cached this long per API process: a revoked key stops working
    # within it. 0 turns the cache off.
    auth_cache_seconds: float = Field(5.0, ge=0, le=300)
    # A job or job-list body is served from memory until the tenant's jobs change
    # (drtrain/jobs/changes.py), and at most this long: the bound on what a change notice
    # lost in transit could hide. 0 turns the cache off.
    job_cache_seconds: float = Field(10.0, ge=0, le=300)
    # Event streams: one database poll per job per interval, whatever the number of watchers.
    events_poll_seconds: float = Field(0.5, gt=0, le=60)
    events_keepalive_seconds: float = Field(15.0, gt=0, le=300)
    max_streams_per_tenant: int = Field(1000, ge=1)
    # Uploads: concurrent ones per tenant (429 beyond), and how long a body may stall
    # between two chunks or take in all before the request is dropped (408).
    max_uploads_per_tenant: int = Field(4, ge=1)
    body_idle_seconds: float = Field(30.0, gt=0)
    body_total_seconds: float = Field(3600.0, gt=0)
    max_concurrent_jobs_per_tenant: int = Field(8, ge=1)
    # A sweep is accepted only while the tenant's active jobs plus its children stay within
    # this (larger) bound; single jobs keep the cap above. See README "Limits".
    max_sweep_jobs_per_tenant: int = Field(256, ge=1)
    # Retention: a job keeps its newest N resumable (epoch/layer) checkpoints while it runs,
    # and only its final model once it has ended. See docs/reliability.md "Retention".
    keep_checkpoints: int = Field(2, ge=1, le=1000)
    # A running job stores an epoch's state every N epochs or M seconds, whichever comes first
    # (0 s: epochs only; layer ends always), off the training thread through a queue of at
    # most this many events (worker/uploader.py). Metrics and progress are written every epoch.
    # 10 epochs / 60 s: a crash re-trains at most that much, while storing a checkpoint
    # (serialise, hash, fsync, upload) takes CPU that every-epoch storage made a visible part
    # of a small CPU job (docs/benchmarks.md, "Service overhead").
    checkpoint_every_epochs: int = Field(10, ge=1, le=10000)
    checkpoint_every_seconds: float = Field(60.0, ge=0)
    upload_queue_events: int = Field(4, ge=1, le=64)
    # Replay full-size training steps from CUDA graphs (dr_core/cuda_graphs.py): the same
    # numbers with far fewer kernel launches. Off until tests/dr_core/test_device_training.py
    # has passed on the worker's GPU.
    cuda_graphs: bool = False
    # Jobs one worker runs at once on one CUDA device, each in a process of its own, admitted
    # while their estimated memory fits the device's free memory (worker/packing.py).
    jobs_per_device: int = Field(1, ge=1, le=64)
    # Bytes of datasets and checkpoints one tenant may hold; 0 means no quota.
    tenant_storage_quota_bytes: int = Field(20 * 1024**3, ge=0)
    # /metrics: "open", "token" (Bearer DRTRAIN_METRICS_TOKEN) or "off"; empty means "token"
    # in production and "open" elsewhere. Token mode without a token serves nothing (404).
    metrics_access: str = Field("", pattern=r"^(|open|token|off)$")
    metrics_token: SecretStr | None = None
    # Failed authentications one client address may make per window before it gets 429.
    auth_failures_per_window: int = Field(20, ge=1)
    auth_failure_window_seconds: float = Field(60.0, gt=0)
    fashion_mnist_dir: Path = Path("/usr/share/datasets/fashion-mnist")
    # Production refuses to start with an embedded default (see ``check_production``).
    environment: str = "embedded"

    @field_validator("environment")
    @classmethod
    def _env(cls, v: str) -> str:
        if v not in ("embedded", "production", "test"):
            raise ValueError("environment must be embedded, production or test")
        return v

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'drtrain.sqlite3').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        # An explicit host keeps kombu from warning "No hostname was supplied".
        return self.broker_url or "filesystem://localhost/"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_dir / "objects").resolve().as_uri()

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    def check_production(self) -> None:
        """In production every backend must be named explicitly: no silent embedded fallback."""
        if self.environment != "production":
            return
        missing = [n for n in ("database_url", "broker_url", "storage_url") if not getattr(self, n)]
        if missing:
            raise ValueError("production needs " + ", ".join(f"DRTRAIN_{m.upper()}" for m in missing))
        # Half a credential pair would silently fall back to whatever boto3 finds around it.
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("production needs both DRTRAIN_S3_ACCESS_KEY_ID and "
                             "DRTRAIN_S3_SECRET_ACCESS_KEY, or neither (ambient credentials)")


@lru_cache
def get_settings() -> Settings:
    return Settings()
