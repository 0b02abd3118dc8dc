"""/v1/queue: the tenant's queue of jobs waiting for a running slot (drtrain/jobs/queue.py)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import SessionDep, SettingsDep, TenantDep
from api.schemas.common import problem_responses
from drtrain.jobs import queue
from drtrain.kit.ids import ID_PATTERN

router = APIRouter(tags=["jobs"])


class QueuedJob(BaseModel):
    position: int = Field(description="1: the next job given a running slot")
    job_id: str


class QueueOut(BaseModel):
    running_limit: int = Field(description="`DRTRAIN_MAX_CONCURRENT_JOBS_PER_TENANT`")
    queued_limit: int = Field(description="`DRTRAIN_MAX_QUEUED_JOBS_PER_TENANT`")
    dispatched: int = Field(description="jobs holding a running slot (running, cancelling, or "
                                        "queued in the broker for the next free worker)")
    waiting: int = Field(description="jobs waiting in this queue")
    items: list[QueuedJob] = Field(description="the first `limit` waiting jobs, next first")
    position: int | None = Field(description="the place of the job asked for with `job_id`; "
                                             "null when it is not waiting (or not asked); a "
                                             "`job_id` that is not one of yours answers 404")


@router.get("/v1/queue", response_model=QueueOut, responses=problem_responses(404, 422))
def get_queue(tenant: TenantDep, settings: SettingsDep, session: SessionDep,
              limit: Annotated[int, Query(
                  ge=0, le=1000, description="how many waiting jobs to list, next first")] = 50,
              job_id: Annotated[str | None, Query(
                  pattern=ID_PATTERN, max_length=64,
                  description="a job whose place to give as `position`")] = None) -> QueueOut:
    view = queue.queue_view(session, tenant.id, limit, job_id)
    return QueueOut(running_limit=settings.max_concurrent_jobs_per_tenant,
                    queued_limit=settings.max_queued_jobs_per_tenant,
                    dispatched=view.dispatched, waiting=view.waiting,
                    items=[QueuedJob(position=n, job_id=i)
                           for n, i in enumerate(view.job_ids, start=1)],
                    position=view.position)
