"""/v1/jobs: HTTP only. Each handler parses, calls one service, and shapes the response."""
from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from api.schemas.common import ResourceId, problem_responses
from api.schemas.jobs import (
    JOB_SPEC_EXAMPLE,
    CheckpointOut,
    JobOut,
    JobPage,
    JobSpec,
    MetricPointOut,
    MetricsPage,
    PredictRequest,
    PredictResponse,
)
from api.services import job_queries as q
from api.services import jobs as service

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

SSE_POLL_SECONDS = 0.5
SSE_KEEPALIVE_SECONDS = 15.0
# Metric seq is a 32-bit column: a larger cursor would fail in the database, not match nothing.
MAX_SEQ = 2**31 - 1


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


def _job_response(job: object, status_code: int = 200, **headers: str) -> Response:
    body = JobOut.model_validate(job).model_dump_json()
    etag = 'W/"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
    return Response(body, status_code=status_code, media_type="application/json",
                    headers={"ETag": etag, **headers})


@router.post("", status_code=202, response_model=JobOut,
             responses={200: {"description": "Replay of an Idempotency-Key", "model": JobOut},
                        **problem_responses(429)})
def submit_job(spec: Annotated[JobSpec, Body(openapi_examples={
                   "digits": {"summary": "DBN + MLP on digits", "value": JOB_SPEC_EXAMPLE}})],
               tenant: TenantDep, session: SessionDep, settings: SettingsDep,
               idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> Response:
    job, created = service.submit_job(session, settings, tenant.id, spec, idempotency_key)
    return _job_response(job, 202 if created else 200, Location=f"/v1/jobs/{job.id}")


@router.get("", response_model=JobPage)
def list_jobs(tenant: TenantDep, session: SessionDep,
              status: Annotated[str | None, Query(pattern=r"^(queued|running|succeeded|failed|"
                                                          r"cancelling|cancelled)$")] = None,
              page_size: Annotated[int, Query(ge=1, le=200)] = 50,
              page_token: Annotated[str | None, Query(max_length=500)] = None) -> JobPage:
    rows, token = q.list_jobs(session, tenant.id, status=status, page_size=page_size,
                              page_token=page_token)
    return JobPage(jobs=[JobOut.model_validate(j) for j in rows], next_page_token=token)


@router.get("/{job_id}", response_model=JobOut, responses={304: {"description": "Not modified"}})
def get_job(job_id: ResourceId, tenant: TenantDep, session: SessionDep,
            if_none_match: Annotated[str | None, Header()] = None) -> Response:
    response = _job_response(q.get_job(session, tenant.id, job_id))
    if _etag_matches(if_none_match, response.headers["ETag"]):
        return Response(status_code=304, headers={"ETag": response.headers["ETag"]})
    return response


@router.get("/{job_id}/metrics", response_model=MetricsPage)
def get_metrics(job_id: ResourceId, tenant: TenantDep, session: SessionDep,
                since: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
                limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> MetricsPage:
    q.get_job(session, tenant.id, job_id)
    points = q.metrics_since(session, job_id, since, limit)
    return MetricsPage(points=[MetricPointOut.model_validate(p) for p in points],
                       next_since=points[-1].seq if points else since)


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
def job_events(job_id: ResourceId, request: Request, tenant: TenantDep, session: SessionDep,
               last_event_id: Annotated[int | None, Header(ge=0, le=MAX_SEQ)] = None,
               ) -> StreamingResponse:
    q.get_job(session, tenant.id, job_id)  # 404 now, not inside an already-started stream
    state = request.app.state
    stream = service.job_events(
        state.sessionmaker, tenant.id, job_id, last_event_id or 0,
        poll_interval=getattr(state, "sse_poll_seconds", SSE_POLL_SECONDS),
        keepalive_interval=getattr(state, "sse_keepalive_seconds", SSE_KEEPALIVE_SECONDS))
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut,
             responses=problem_responses(409))
def cancel_job(job_id: ResourceId, tenant: TenantDep, session: SessionDep) -> Response:
    return _job_response(service.cancel_job(session, tenant.id, job_id), 202)


@router.get("/{job_id}/checkpoints", response_model=list[CheckpointOut])
def list_checkpoints(job_id: ResourceId, tenant: TenantDep,
                     session: SessionDep) -> list[CheckpointOut]:
    q.get_job(session, tenant.id, job_id)
    return [CheckpointOut.model_validate(c) for c in q.checkpoints(session, job_id)]


@router.get("/{job_id}/model", response_class=StreamingResponse, responses={
    200: {"content": {"application/octet-stream": {}}}, 206: {"description": "Partial content"},
    304: {"description": "Not modified"}, 307: {"description": "Redirect to a presigned URL"},
    416: {"description": "Range not satisfiable"}, **problem_responses(409)})
def download_model(job_id: ResourceId, tenant: TenantDep, session: SessionDep, store: StoreDep,
                   settings: SettingsDep, redirect: bool = False,
                   range_: Annotated[str | None, Header(alias="Range")] = None,
                   if_none_match: Annotated[str | None, Header()] = None) -> Response:
    ck = service.final_model(session, tenant.id, job_id)
    etag = f'"{ck.sha256}"'
    if _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    if redirect and (url := store.presign(ck.object_key, settings.presign_seconds)):
        return RedirectResponse(url, status_code=307)
    size = ck.size_bytes
    span = service.parse_range(range_, size)
    start, end = span if span else (0, size - 1)
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Length": str(end - start + 1),
               "Content-Disposition": f'attachment; filename="{job_id}.safetensors"'}
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    chunks = store.iter_range(ck.object_key, start, end if size else None)
    return StreamingResponse(chunks, status_code=206 if span else 200,
                             media_type="application/octet-stream", headers=headers)


@router.post("/{job_id}/predict", response_model=PredictResponse,
             responses=problem_responses(409))
def predict(job_id: ResourceId, body: PredictRequest, tenant: TenantDep, session: SessionDep,
            store: StoreDep) -> PredictResponse:
    labels, probs = service.predict(session, store, tenant.id, job_id, body.inputs)
    return PredictResponse(predictions=labels, probabilities=probs)
