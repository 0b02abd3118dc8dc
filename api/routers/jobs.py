"""/v1/jobs: HTTP only. Each handler parses, calls one service, and shapes the response."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from api import events
from api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from api.http import etag_matches, job_response, object_download
from api.schemas.common import ResourceId, problem_responses
from api.schemas.jobs import (
    CheckpointList,
    CheckpointOut,
    JobOut,
    JobPage,
    MetricPointOut,
    MetricsPage,
    PredictRequest,
    PredictResponse,
)
from drtrain.jobs import repository as q
from drtrain.jobs import service
from drtrain.jobs.spec import JOB_SPEC_EXAMPLE, JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

SSE_POLL_SECONDS = 0.5
SSE_KEEPALIVE_SECONDS = 15.0
# Metric seq is a 32-bit column: a larger cursor would fail in the database, not match nothing.
MAX_SEQ = 2**31 - 1


@router.post("", status_code=202, response_model=JobOut,
             responses={200: {"description": "Replay of an Idempotency-Key", "model": JobOut},
                        **problem_responses(429)})
def submit_job(spec: Annotated[JobSpec, Body(openapi_examples={
                   "digits": {"summary": "DBN + MLP on digits", "value": JOB_SPEC_EXAMPLE}})],
               tenant: TenantDep, session: SessionDep, settings: SettingsDep,
               idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> Response:
    job, created = service.submit_job(session, settings, tenant.id, spec, idempotency_key)
    return job_response(job, 202 if created else 200, Location=f"/v1/jobs/{job.id}")


@router.get("", response_model=JobPage)
def list_jobs(tenant: TenantDep, session: SessionDep,
              status: Annotated[str | None, Query(pattern=r"^(queued|running|succeeded|failed|"
                                                          r"cancelling|cancelled)$")] = None,
              page_size: Annotated[int, Query(ge=1, le=200)] = 50,
              page_token: Annotated[str | None, Query(max_length=500)] = None) -> JobPage:
    rows, token = q.list_jobs(session, tenant.id, status=status, page_size=page_size,
                              page_token=page_token)
    return JobPage(items=[JobOut.model_validate(j) for j in rows], next_page_token=token)


@router.get("/{job_id}", response_model=JobOut, responses={304: {"description": "Not modified"}})
def get_job(job_id: ResourceId, tenant: TenantDep, session: SessionDep,
            if_none_match: Annotated[str | None, Header()] = None) -> Response:
    response = job_response(q.get_job(session, tenant.id, job_id))
    if etag_matches(if_none_match, response.headers["ETag"]):
        return Response(status_code=304, headers={"ETag": response.headers["ETag"]})
    return response


@router.get("/{job_id}/metrics", response_model=MetricsPage)
def get_metrics(job_id: ResourceId, tenant: TenantDep, session: SessionDep,
                since: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
                limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> MetricsPage:
    q.get_job(session, tenant.id, job_id)
    points = q.metrics_since(session, job_id, since, limit)
    return MetricsPage(items=[MetricPointOut.model_validate(p) for p in points],
                       next_since=points[-1].seq if points else since)


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
def job_events(job_id: ResourceId, request: Request, tenant: TenantDep, session: SessionDep,
               last_event_id: Annotated[int | None, Header(ge=0, le=MAX_SEQ)] = None,
               ) -> StreamingResponse:
    q.get_job(session, tenant.id, job_id)  # 404 now, not inside an already-started stream
    state = request.app.state
    stream = events.job_events(
        state.sessionmaker, tenant.id, job_id, last_event_id or 0,
        poll_interval=getattr(state, "sse_poll_seconds", SSE_POLL_SECONDS),
        keepalive_interval=getattr(state, "sse_keepalive_seconds", SSE_KEEPALIVE_SECONDS))
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut,
             responses=problem_responses(409))
def cancel_job(job_id: ResourceId, tenant: TenantDep, session: SessionDep) -> Response:
    return job_response(service.cancel_job(session, tenant.id, job_id), 202)


@router.get("/{job_id}/checkpoints", response_model=CheckpointList)
def list_checkpoints(job_id: ResourceId, tenant: TenantDep, session: SessionDep) -> CheckpointList:
    q.get_job(session, tenant.id, job_id)
    return CheckpointList(items=[CheckpointOut.model_validate(c)
                                 for c in q.checkpoints(session, job_id)])


_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}}, 206: {"description": "Partial content"},
    304: {"description": "Not modified"}, 307: {"description": "Redirect to a presigned URL"},
    416: {"description": "Range not satisfiable"}}


@router.get("/{job_id}/model", response_class=StreamingResponse,
            responses={**_DOWNLOAD_RESPONSES, **problem_responses(409)})
def download_model(job_id: ResourceId, tenant: TenantDep, session: SessionDep, store: StoreDep,
                   settings: SettingsDep, redirect: bool = False,
                   range_: Annotated[str | None, Header(alias="Range")] = None,
                   if_none_match: Annotated[str | None, Header()] = None) -> Response:
    ck = service.final_model(session, tenant.id, job_id)
    if redirect and (url := store.presign(ck.object_key, settings.presign_seconds)):
        return RedirectResponse(url, status_code=307)
    return object_download(store, ck, f"{job_id}.safetensors", range_, if_none_match)


@router.get("/{job_id}/checkpoints/{checkpoint_id}", response_class=StreamingResponse,
            responses={**_DOWNLOAD_RESPONSES, **problem_responses(404)})
def download_checkpoint(job_id: ResourceId, checkpoint_id: ResourceId, tenant: TenantDep,
                        session: SessionDep, store: StoreDep, settings: SettingsDep,
                        redirect: bool = False,
                        range_: Annotated[str | None, Header(alias="Range")] = None,
                        if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """One checkpoint's safetensors file (a layer, an epoch or the final model)."""
    ck = service.checkpoint(session, tenant.id, job_id, checkpoint_id)
    if redirect and (url := store.presign(ck.object_key, settings.presign_seconds)):
        return RedirectResponse(url, status_code=307)
    return object_download(store, ck, f"{job_id}-{ck.kind}-{checkpoint_id}.safetensors", range_,
                           if_none_match)


@router.post("/{job_id}/predict", response_model=PredictResponse,
             responses=problem_responses(409))
def predict(job_id: ResourceId, body: PredictRequest, tenant: TenantDep, session: SessionDep,
            store: StoreDep) -> PredictResponse:
    labels, probs = service.predict(session, store, tenant.id, job_id, body.inputs)
    return PredictResponse(predictions=labels, probabilities=probs)
