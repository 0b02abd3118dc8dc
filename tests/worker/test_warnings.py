"""The worker adds what it finds wrong with the real split to the job's warnings."""
from __future__ import annotations

from tests.factories import get_job
from worker.runner import run_job


def test_worker_warns_about_an_oversized_batch_and_keeps_submit_warnings(settings, factory,
                                                                          store, make_job):
    job_id = make_job(pretrain={"epochs": 1, "batch_size": 4096},
                      finetune={"epochs": 1, "batch_size": 32})
    with factory() as s:
        from drtrain.kit.models import Job

        s.get(Job, job_id).warnings = ["said at submit"]
        s.commit()
    run_job(job_id, settings=settings, sessionmaker=factory, store=store, worker_id="w1")
    job = get_job(factory, job_id)
    assert job.status == "succeeded", job.status_reason
    assert job.warnings[0] == "said at submit"
    assert any("pretrain.batch_size 4096 is more than the 128 training rows" in w
               for w in job.warnings), job.warnings
    assert not any("finetune.batch_size" in w for w in job.warnings)


def test_a_healthy_job_has_no_warnings(settings, factory, store, make_job):
    job_id = make_job()
    run_job(job_id, settings=settings, sessionmaker=factory, store=store, worker_id="w1")
    job = get_job(factory, job_id)
    assert job.status == "succeeded", job.status_reason
    assert not job.warnings
