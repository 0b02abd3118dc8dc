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
    max_decompressed_bytes: int = Field(2 * 1024 * 1024 * 1024, ge=1024)
    max_attempts: int = Field(3, ge=1, le=10)
    heartbeat_seconds: float = Field(5.0, gt=0)
    lease_seconds: float = Field(30.0, gt=0)
    requeue_queued_after_seconds: float = Field(60.0, gt=0)
    cancel_grace_seconds: float = Field(30.0, gt=0)
    max_concurrent_jobs_per_tenant: int = Field(8, ge=1)
    # A sweep is accepted only while the tenant's active jobs plus its children stay within
    # this (larger) bound; single jobs keep the cap above. See README "Limits".
    max_sweep_jobs_per_tenant: int = Field(256, ge=1)
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
