"""The one settings object. Nothing else in drtrain reads the environment."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The settings naming each backend: the database, the broker, the object store.
BACKENDS = ("database_url", "broker_url", "storage_url")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRTRAIN_", extra="ignore")

    # Each description is a row of docs/configuration.md (scripts/gen_config_docs.py).
    data_dir: Path = Field(Path(".drtrain"), description=(
        "Embedded data folder: the SQLite file, objects, broker folder, `api-key` and `url`."))
    # Empty means "embedded default inside data_dir" (resolved by the properties below).
    database_url: str = Field("", description=(
        "e.g. `postgresql+psycopg://user:pw@host/db`; empty: a SQLite file in the data folder."))
    # PgBouncer in transaction mode cannot LISTEN (a session lives only for a transaction):
    # the API's change listener needs a connection of its own, straight to PostgreSQL.
    database_listen_url: str = Field("", description=(
        "A direct PostgreSQL URL for the API's job-change listener (LISTEN), when "
        "`DRTRAIN_DATABASE_URL` goes through PgBouncer in transaction mode; empty: "
        "`DRTRAIN_DATABASE_URL`."))
    broker_url: str = Field("", description=(
        "e.g. `redis://host:6379/0`; empty: the embedded filesystem broker in the data folder."))
    storage_url: str = Field("", description=(
        "`s3://bucket/prefix`, or a `file://` folder; empty: `file://<data dir>/objects`."))
    s3_endpoint_url: str | None = Field(None, description=(
        "MinIO or another S3-compatible endpoint; unset: AWS."))
    s3_access_key_id: str | None = Field(None, description=(
        "S3 credentials, with `DRTRAIN_S3_SECRET_ACCESS_KEY` (both or neither); unset: the "
        "credentials boto3 finds around it."))
    # SecretStr: repr/str of the settings (and any log or traceback showing them) hide it.
    s3_secret_access_key: SecretStr | None = Field(None, description=(
        "S3 credentials, with `DRTRAIN_S3_ACCESS_KEY_ID`; never shown in logs."))
    s3_region: str = Field("us-east-1", description="S3 region.")
    presign_seconds: int = Field(300, ge=10, le=86400, description=(
        "With an S3 store, how long the presigned URL of a model or checkpoint download with "
        "`?redirect=true` (307) stays valid."))

    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1024, description=(
        "Upload limit (413 beyond, enforced while streaming)."))
    # What a dataset may inflate to (NPZ/IDX arrays, and the float32 features a worker holds
    # to train): set it to the memory one job can afford. Checking an upload streams it.
    max_decompressed_bytes: int = Field(2 * 1024 * 1024 * 1024, ge=1024, description=(
        "What an NPZ/IDX may inflate to, and the float32 features a worker holds to train "
        "(set it to the memory one job can afford)."))
    # Distinct labels one dataset may hold (422 beyond): every listing carries the class table.
    max_classes: int = Field(1000, ge=2, le=100_000, description=(
        "Distinct labels one dataset may hold (the check fails it beyond)."))
    # Uploads are checked after the 202, in processes of their own (drtrain.datasets.validation):
    # this many at once per API process, each stopped past the time and memory given here.
    upload_validators: int = Field(2, ge=1, le=64, description=(
        "Uploads checked at once per API process (each in a child process; the others wait)."))
    upload_validation_seconds: float = Field(600.0, gt=0, description=(
        "An upload's check (queueing included) fails past this time."))
    upload_validation_memory_bytes: int = Field(2 * 1024 * 1024 * 1024, ge=0, description=(
        "The address-space cap of an upload's check process (0 = none)."))
    max_attempts: int = Field(3, ge=1, le=10, description=(
        "Attempts for a job whose spec sets no `max_attempts`: how often a job whose worker "
        "died is resumed."))
    heartbeat_seconds: float = Field(5.0, gt=0, description=(
        "How often a worker renews the lease of the job it runs (its heartbeat)."))
    lease_seconds: float = Field(30.0, gt=0, description=(
        "Lease length: a running job whose lease has expired is requeued by a reaper."))
    requeue_queued_after_seconds: float = Field(60.0, gt=0, description=(
        "A job queued (or last published) this long ago whose message is in no broker queue, "
        "two reaper rounds in a row, is published again."))
    cancel_grace_seconds: float = Field(30.0, gt=0, description=(
        "After a cancel or `max_runtime_seconds`, how long training may take to stop at a "
        "batch before its process is killed and the job ended."))
    # The API's threads (anyio's limiter) and its database pool are sized from this one
    # number, so a request never waits for a connection that a thread-starved request holds.
    api_threads: int = Field(16, ge=1, le=256, description=(
        "The API's worker threads (anyio's limiter); its database pool holds as many "
        "connections, plus as many again in overflow."))
    db_pool_timeout_seconds: float = Field(5.0, gt=0, le=120, description=(
        "How long a request waits for a pooled connection before it fails."))
    # A key's tenant is cached this long per API process: a revoked key stops working
    # within it. 0 turns the cache off.
    auth_cache_seconds: float = Field(5.0, ge=0, le=300, description=(
        "An API key's tenant is cached this long per API process: a revoked key stops "
        "working within it (0 = check every request)."))
    # A job or job-list body is served from memory until the tenant's jobs change
    # (drtrain/kit/job_changes.py), and at most this long: the bound on what a change notice
    # lost in transit could hide. 0 turns the cache off.
    job_cache_seconds: float = Field(10.0, ge=0, le=300, description=(
        "`GET /v1/jobs/{id}` and first pages of `GET /v1/jobs` are answered from memory until "
        "the tenant's jobs change, and at most this long (0 = read the database every time)."))
    # Event streams: one database poll per job per interval, whatever the number of watchers.
    events_poll_seconds: float = Field(0.5, gt=0, le=60, description=(
        "Event streams: one database poll per watched job per interval, whatever the number "
        "of watchers."))
    events_keepalive_seconds: float = Field(15.0, gt=0, le=300, description=(
        "Event streams send a keep-alive comment when idle this long."))
    max_streams_per_tenant: int = Field(1000, ge=1, description=(
        "Open event streams per tenant and API process (429 beyond)."))
    # Uploads: concurrent ones per tenant (429 beyond), and how long a body may stall
    # between two chunks or take in all before the request is dropped (408).
    max_uploads_per_tenant: int = Field(4, ge=1, description=(
        "Uploads one tenant sends at once per API process (429 beyond)."))
    body_idle_seconds: float = Field(30.0, gt=0, description=(
        "A request body that stalls this long between chunks is dropped (408)."))
    body_total_seconds: float = Field(3600.0, gt=0, description=(
        "A request body that takes this long in all is dropped (408)."))
    # The running cap and the queue behind it: drtrain/jobs/queue.py, docs/guide.md "Limits".
    max_concurrent_jobs_per_tenant: int = Field(8, ge=1, description=(
        "Jobs one tenant has dispatched to the workers at once (running, or next in the "
        "broker); more wait in the tenant's queue."))
    max_queued_jobs_per_tenant: int = Field(1000, ge=0, description=(
        "Jobs one tenant may have waiting in its queue for a running slot (429 beyond)."))
    # A sweep is accepted only while the tenant's active jobs plus its children stay within
    # this (larger) bound; single jobs keep the cap above. See docs/guide.md "Limits".
    max_sweep_jobs_per_tenant: int = Field(256, ge=1, description=(
        "A sweep is accepted only if active jobs + its children stay within this (429; 422 "
        "when the grid alone is larger)."))
    # Retention: a job keeps its newest N resumable (epoch/layer) checkpoints while it runs,
    # and only its final model once it has ended. See docs/reliability.md "Retention".
    keep_checkpoints: int = Field(2, ge=1, le=1000, description=(
        "Layer/epoch checkpoints a running job keeps (an ended job keeps only its model)."))
    # History: once an ended job is this old, its metric curves are downsampled by the reaper
    # (drtrain/jobs/history.py): every point of the last N epochs, at most M before them, with
    # each curve's first, last, min and max kept. See docs/reliability.md "History".
    metric_history_full_days: float = Field(7.0, ge=0, description=(
        "Days after a job has ended before its metric curves are downsampled (0: at once)."))
    metric_history_recent_epochs: int = Field(10, ge=1, le=100_000, description=(
        "A downsampled curve keeps every point of its last this many epochs."))
    metric_history_points_per_curve: int = Field(50, ge=4, le=100_000, description=(
        "A downsampled curve keeps at most this many points before its last epochs (its "
        "first, minimum and maximum among them)."))
    # A running job stores an epoch's state every N epochs or M seconds, whichever comes first
    # (0 s: epochs only; layer ends always), off the training thread through a queue of at
    # most this many events (worker/uploader.py). Metrics and progress are written every epoch.
    # 10 epochs / 60 s: a crash re-trains at most that much, while storing a checkpoint
    # (serialise, hash, fsync, upload) takes CPU that every-epoch storage made a visible part
    # of a small CPU job (docs/benchmarks.md, "Service overhead").
    checkpoint_every_epochs: int = Field(10, ge=1, le=10000, description=(
        "Epochs between a running job's stored states, or `DRTRAIN_CHECKPOINT_EVERY_SECONDS` "
        "if that comes first (layer ends always, in place of the layer's last epoch); metrics "
        "are written every epoch. A crash "
        "re-trains at most that much; what storing costs is in docs/benchmarks.md."))
    checkpoint_every_seconds: float = Field(60.0, ge=0, description=(
        "The time bound beside `DRTRAIN_CHECKPOINT_EVERY_EPOCHS` (0 s: epochs only)."))
    # A training process whose tensor operations use every CPU of the host slows to a crawl
    # beside another one doing the same (their thread teams take turns on the cores):
    # worker/threads.py shares the CPUs out instead.
    torch_threads: int = Field(0, ge=0, le=1024, description=(
        "CPU threads of a training process's tensor operations. 0: torch's own choice where "
        "`OMP_NUM_THREADS` is set, else this host's CPUs shared out among the jobs run at once "
        "(the worker's `--concurrency`, or `drtrain up --workers`), at least 1 each."))
    upload_queue_events: int = Field(4, ge=1, le=64, description=(
        "Epoch events waiting for the background uploader (checkpoints, metrics, progress) "
        "before training waits."))
    record_every_seconds: float = Field(0.5, ge=0, le=60, description=(
        "How long the background uploader gathers a job's epoch events before writing them "
        "in one transaction (0: each as soon as it can). Live metrics and progress lag by "
        "at most this much; shorter costs the worker and the database a transaction per "
        "epoch of a fast job."))
    # Each attempt's own log lines (worker/job_log.py), kept in the database and served by
    # GET /v1/jobs/{id}/logs: bounded per attempt, written in batches.
    job_log_max_bytes: int = Field(1_048_576, ge=4096, le=64 * 1_048_576, description=(
        "Bytes of log lines one attempt of a job keeps; later lines are dropped after a "
        "line saying so."))
    job_log_flush_seconds: float = Field(2.0, gt=0, le=60, description=(
        "How often a worker writes a running job's new log lines to the database (what a "
        "crash can lose)."))
    # Replay full-size training steps from CUDA graphs (dr_core/cuda_graphs.py): the same
    # numbers with far fewer kernel launches. Off until tests/dr_core/test_device_training.py
    # has passed on the worker's GPU.
    cuda_graphs: bool = Field(False, description=(
        "Replay full-size training steps from CUDA graphs (same numbers, fewer launches); "
        "turn on once `pytest -m cuda tests/dr_core` passes on the GPU."))
    # Jobs one worker runs at once on one CUDA device, each in a process of its own, admitted
    # while their estimated memory fits the device's free memory (worker/packing.py).
    jobs_per_device: int = Field(1, ge=1, le=64, description=(
        "Jobs a worker runs at once on one GPU (separate processes, admitted by estimated "
        "memory against free device memory)."))
    # Bytes of datasets and checkpoints one tenant may hold; 0 means no quota.
    tenant_storage_quota_bytes: int = Field(20 * 1024**3, ge=0, description=(
        "Datasets + checkpoints per tenant; 413 for an upload past it, 429 for new jobs at "
        "it (0 = none)."))
    # /metrics: "open", "token" (Bearer DRTRAIN_METRICS_TOKEN) or "off"; empty means "token"
    # in production and "open" elsewhere. Token mode without a token serves nothing (404).
    metrics_access: str = Field("", pattern=r"^(|open|token|off)$", description=(
        "`/metrics`: `open`, `token` (Bearer `DRTRAIN_METRICS_TOKEN`) or `off`; empty: "
        "`token` in production (nothing served until a token is set), `open` elsewhere."))
    metrics_token: SecretStr | None = Field(None, description=(
        "The bearer token `/metrics` asks for when `DRTRAIN_METRICS_ACCESS` is `token`."))
    # Failed authentications one client address may make per window before it gets 429.
    auth_failures_per_window: int = Field(20, ge=1, description=(
        "Failed authentications per client address within the window before 429."))
    auth_failure_window_seconds: float = Field(60.0, gt=0, description=(
        "The window of `DRTRAIN_AUTH_FAILURES_PER_WINDOW`."))
    fashion_mnist_dir: Path = Field(Path("/usr/share/datasets/fashion-mnist"), description=(
        "Where `builtin:fashion-mnist` is read."))
    # Production refuses to start with an embedded default (see ``check_production``).
    environment: str = Field("embedded", description=(
        "`embedded`, `production` or `test`; `production` requires database, broker and "
        "storage URLs explicitly."))

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

    def check_production(self, needs: tuple[str, ...] = BACKENDS) -> None:
        """In production every backend a process uses (``needs``: all of them unless said)
        must be named explicitly: no silent embedded fallback."""
        if self.environment != "production":
            return
        missing = [n for n in needs if not getattr(self, n)]
        if missing:
            raise ValueError("production needs " + ", ".join(f"DRTRAIN_{m.upper()}" for m in missing))
        # Half a credential pair would silently fall back to whatever boto3 finds around it.
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("production needs both DRTRAIN_S3_ACCESS_KEY_ID and "
                             "DRTRAIN_S3_SECRET_ACCESS_KEY, or neither (ambient credentials)")


@lru_cache
def get_settings() -> Settings:
    return Settings()
