"""Fixtures for worker tests: commits that really happen, and worker timings short enough
for a test.

The runner commits from several threads (training and heartbeat), so these tests cannot use
the rolled-back ``db`` session of tests/conftest.py; instead every test makes its own tenant
and jobs (fresh ids) in this folder's database (``pg_url``, from tests/conftest.py).
"""
from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from drtrain.jobs.spec import JobSpec, spec_to_dict
from drtrain.kit.db import make_sessionmaker, session_scope
from drtrain.kit.models import Dataset, Job, JobStatus, Tenant, new_id, utcnow
from drtrain.kit.settings import Settings
from drtrain.kit.storage import ObjectStore
from tests.factories import digits_subset

torch.set_num_threads(1)

# Small enough to train quickly on a shared CPU, big enough that every phase really runs.
TINY_SPEC = {
    "validation_fraction": 0.2,
    "model": {"hidden_layers": [16, 8], "visible_units": "auto"},
    "pretrain": {"epochs": 2, "batch_size": 32, "learning_rate": 0.05,
                 "dr": {"weight": 0.5, "divergence": "hellinger", "pairs": {"sample": 4}}},
    "finetune": {"epochs": 2, "batch_size": 32, "learning_rate": 0.1,
                 "dr": {"weight": 0.05, "distance": "euclidean", "layers": "all"}},
    "seed": 7,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def settings(tmp_path: Path, pg_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=pg_url,
                    storage_url=(tmp_path / "objects").as_uri(), broker_url="",
                    environment="test", heartbeat_seconds=0.1, lease_seconds=5.0,
                    cancel_grace_seconds=30.0, requeue_queued_after_seconds=60.0,
                    checkpoint_every_epochs=1)


@pytest.fixture
def tenant_id(factory: sessionmaker[Session]) -> str:
    with session_scope(factory) as s:
        tenant = Tenant(name=f"t-{new_id()[:12]}")
        s.add(tenant)
        s.flush()
        return tenant.id


@pytest.fixture
def dataset_id(factory: sessionmaker[Session], store: ObjectStore, tenant_id: str,
               tmp_path: Path) -> str:
    """A small digits NPZ uploaded to the store with its Dataset row (as the API would)."""
    X, y = digits_subset()
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    path = tmp_path / "digits.npz"
    path.write_bytes(buf.getvalue())
    ds_id = new_id()
    stored = store.put_file(f"datasets/{ds_id}/data.npz", path)
    with session_scope(factory) as s:
        s.add(Dataset(id=ds_id, tenant_id=tenant_id, name="digits-subset", format="npz",
                      object_key=stored.key, n_samples=len(y), n_features=X.shape[1],
                      n_classes=len(set(y.tolist())),
                      class_counts={str(c): int((y == c).sum()) for c in set(y.tolist())},
                      feature_range=[float(X.min()), float(X.max())],
                      visible_units_hint="bernoulli", sha256=stored.sha256,
                      size_bytes=stored.size_bytes))
    return ds_id


MakeJob = Callable[..., str]


@pytest.fixture
def make_job(factory: sessionmaker[Session], tenant_id: str, dataset_id: str) -> MakeJob:
    """Insert a queued job whose spec is TINY_SPEC updated with ``overrides`` (validated and
    defaulted by the API's own JobSpec, exactly as submit stores it); ``dispatched=False``
    leaves it waiting in its tenant's queue."""
    def make(status: JobStatus = JobStatus.queued, *, dispatched: bool = True,
             **overrides: object) -> str:
        raw = {**TINY_SPEC, "dataset_id": dataset_id, **overrides}
        spec = spec_to_dict(JobSpec.model_validate(raw))
        job_id = new_id()
        with session_scope(factory) as s:
            s.add(Job(id=job_id, tenant_id=tenant_id, dataset_id=spec["dataset_id"],
                      test_dataset_id=spec["test_dataset_id"], spec=spec, status=status,
                      max_attempts=spec["max_attempts"],
                      dispatched_at=utcnow() if dispatched else None))
        return job_id
    return make
