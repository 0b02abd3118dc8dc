"""The bare spec learns: {"dataset_id": "builtin:digits"} alone, run by the real runner."""
from __future__ import annotations

import pytest

from drtrain.jobs.spec import JobSpec, spec_to_dict
from drtrain.kit.db import session_scope
from drtrain.kit.models import Job, new_id, utcnow
from tests.factories import get_job
from worker.runner import run_job


@pytest.mark.slow
def test_bare_spec_on_digits_reaches_090_validation_accuracy(settings, factory, store,
                                                             tenant_id) -> None:
    spec = spec_to_dict(JobSpec.model_validate({"dataset_id": "builtin:digits",
                                                "device": "cpu", "max_attempts": 1}))
    job_id = new_id()
    with session_scope(factory) as s:
        s.add(Job(id=job_id, tenant_id=tenant_id, dataset_id="builtin:digits", spec=spec,
                  max_attempts=1, dispatched_at=utcnow()))
    run_job(job_id, settings=settings, sessionmaker=factory, store=store, worker_id="w1")
    job = get_job(factory, job_id)
    assert job.status == "succeeded", job.status_reason
    assert job.result["val_accuracy"] >= 0.90, job.result
    assert not job.warnings
