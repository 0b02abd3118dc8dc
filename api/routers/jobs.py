"""/v1/jobs: HTTP only. Each handler parses, calls one service, and shapes the response."""
from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse, RedirectResponse, StreamingResponse

from api import events, reads
from api.deps import CredentialsDep, SessionDep, SettingsDep, StoreDep, TenantDep, key_still_valid
from api.http import object_download
from api.job_reads import JobReads, no_cache
from api.reads import job_response
from api.schemas.common import ResourceId, headers, problem_responses
from api.schemas.jobs import (
    MAX_SEQ,
    CheckpointList,
    CheckpointOut,
    JobListQuery,
    JobOut,
    JobPage,
    LogsQuery,
    MetricsPage,
    MetricsQuery,
    PredictRequest,
    PredictResponse,
)
from api.submits import Submits
from drtrain.jobs import logs, retention, service
from drtrain.jobs.spec import JOB_SPEC_EXAMPLE, JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])



@router.post("", status_code=202, response_model=JobOut,
             responses={202: headers("Location", "ETag"),
                        200: {"description": "Replay of an Idempotency-Key", "model": JobOut,
                              **headers("Location", "ETag")},
                        **problem_responses(409, 422, 429)})
async def submit_job(spec: Annotated[JobSpec, Body(openapi_examples={
                         "digits": {"summary": "DBN + MLP on digits", "value": JOB_SPEC_EXAMPLE}})],
                     request: Request, tenant: TenantDep,
                     idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
                     ) -> Response:
    submits: Submits = request.app.state.submits
    sub = await submits.submit(request.app.state, tenant.id, spec, idempotency_key)
    job = cast(dict[str, Any], sub.job)
    return job_response(job, 202 if sub.created else 200, Location=f"/v1/jobs/{job['id']}")


# The reads below answer from the app's JobReads (api/job_reads.py), as their shortcut does
# (api/fast_reads.py): plain columns serialised once, a weak ETag (304 on If-None-Match).

# Read-your-writes across API processes: `no-cache` reads the database, so it reflects every
# write acknowledged before the request was sent, by whichever process (docs/reliability.md).
CacheControl = Annotated[str | None, Header(
    max_length=200, description="`no-cache` (or `max-age=0`): answer from the database, not "
    "this API process's cache, so the answer reflects every write acknowledged before the "
    "request was sent, by any API process")]

_READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: headers("ETag"), 304: {"description": "Not modified", **headers("ETag")}}


@router.get("", response_model=JobPage, responses=_READ_RESPONSES)
async def list_jobs(request: Request, tenant: TenantDep, query: Annotated[JobListQuery, Query()],
                    if_none_match: Annotated[str | None, Header()] = None,
                    cache_control: CacheControl = None) -> Response:
    """Newest first. Rows leave out each job's spec unless `include=spec`."""
    page = await job_reads(request).page(tenant.id, query, fresh=no_cache(cache_control))
    return reads.respond(page, if_none_match)


@router.get("/{job_id}", response_model=JobOut, responses=_READ_RESPONSES)
async def get_job(job_id: ResourceId, request: Request, tenant: TenantDep,
                  if_none_match: Annotated[str | None, Header()] = None,
                  cache_control: CacheControl = None) -> Response:
    job = await job_reads(request).job(tenant.id, job_id, fresh=no_cache(cache_control))
    return reads.respond(job, if_none_match)


@router.get("/{job_id}/metrics", response_model=MetricsPage, responses=_READ_RESPONSES)
async def get_job_metrics(job_id: ResourceId, request: Request, tenant: TenantDep,
                      query: Annotated[MetricsQuery, Query()],
                      if_none_match: Annotated[str | None, Header()] = None) -> Response:
    page = await job_reads(request).metrics(tenant.id, job_id, query)
    return reads.respond(page, if_none_match)


def job_reads(request: Request) -> JobReads:
    job_reads_: JobReads = request.app.state.job_reads
    return job_reads_


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}, **problem_responses(429)})
async def stream_job_events(job_id: ResourceId, request: Request, tenant: TenantDep,
                     credentials: CredentialsDep,
                     last_event_id: Annotated[int, Header(ge=0, le=MAX_SEQ)] = 0,
                     ) -> Response:
    """Server-Sent Events; at most ``DRTRAIN_MAX_STREAMS_PER_TENANT`` open at once (429).
    Frames: `metric` (a point, `id` = its seq), `status` (the job), keep-alive comments, and
    `error` (problem+json, then the stream closes): the API key was revoked while the stream
    was open, noticed within ``DRTRAIN_AUTH_CACHE_SECONDS``."""
    hub = request.app.state.events
    await hub.check_exists(job_reads(request), tenant.id, job_id)  # 404 now, not inside an open stream
    slots = request.app.state.stream_slots
    slots.acquire(tenant.id)
    state = request.app.state
    key = None if credentials is None else events.KeyCheck(
        key_still_valid(state, credentials.credentials),
        every=max(state.settings.auth_cache_seconds, 0.1))
    stream = hub.stream(job_reads(request), tenant.id, job_id, last_event_id, key)
    return events.EventStreamResponse(stream, release=lambda: slots.release(tenant.id))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut,
             responses={202: headers("ETag"),
                        200: {"description": "Already cancelled (idempotent repeat)",
                              "model": JobOut, **headers("ETag")}, **problem_responses(409)})
def cancel_job(job_id: ResourceId, tenant: TenantDep, session: SessionDep,
               settings: SettingsDep) -> Response:
    job, already = service.cancel_job(session, settings, tenant.id, job_id)
    return job_response(job, 200 if already else 202)


@router.delete("/{job_id}", status_code=204, response_class=Response,
               responses=problem_responses(409))
def delete_job(job_id: ResourceId, tenant: TenantDep, session: SessionDep,
               store: StoreDep) -> Response:
    retention.delete_job(session, store, tenant.id, job_id)
    return Response(status_code=204)


@router.get("/{job_id}/checkpoints", response_model=CheckpointList)
def list_checkpoints(job_id: ResourceId, tenant: TenantDep, session: SessionDep) -> CheckpointList:
    return CheckpointList(items=[CheckpointOut.model_validate(c) for c in
                                 service.checkpoints(session, tenant.id, job_id)])


@router.get("/{job_id}/logs", response_class=PlainTextResponse,
            responses={200: {"description": "One line of the log per line of text, each ending "
                                            "with a newline"}})
def get_job_logs(job_id: ResourceId, tenant: TenantDep, session: SessionDep,
                 query: Annotated[LogsQuery, Query()]) -> PlainTextResponse:
    got = logs.read(session, tenant.id, job_id, query.attempt, query.since)
    return PlainTextResponse("".join(f"{line}\n" for line in got.lines))


_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file", "content": _BINARY,
          **headers("ETag", "Accept-Ranges", "Content-Length")},
    206: {"description": "Partial content: the bytes of the Range", "content": _BINARY,
          **headers("ETag", "Accept-Ranges", "Content-Range", "Content-Length")},
    304: {"description": "Not modified", **headers("ETag")},
    307: {"description": "Redirect to a presigned URL (`?redirect=true` with an S3 store)",
          **headers("Location")},
    **problem_responses(410, 416)}
# HEAD answers GET's statuses and headers without a body (and never redirects).
_HEAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file's headers", **headers("ETag", "Accept-Ranges",
                                                          "Content-Length")},
    206: {"description": "The Range's headers", **headers("ETag", "Accept-Ranges",
                                                           "Content-Range", "Content-Length")},
    304: _DOWNLOAD_RESPONSES[304], **problem_responses(409, 416)}


@router.get("/{job_id}/model", response_class=StreamingResponse,
            responses={**_DOWNLOAD_RESPONSES, **problem_responses(409)})
def download_model(job_id: ResourceId, tenant: TenantDep, session: SessionDep, store: StoreDep,
                   settings: SettingsDep, redirect: bool = False,
                   range_: Annotated[str | None, Header(alias="Range")] = None,
                   if_none_match: Annotated[str | None, Header()] = None,
                   if_range: Annotated[str | None, Header()] = None) -> Response:
    ck = service.final_model(session, tenant.id, job_id)
    if redirect and (url := store.presign(ck.object_key, settings.presign_seconds)):
        return RedirectResponse(url, status_code=307)
    return object_download(store, ck, f"{job_id}.safetensors", range_, if_none_match,
                           if_range=if_range)


@router.head("/{job_id}/model", response_class=Response, responses=_HEAD_RESPONSES)
def head_model(job_id: ResourceId, tenant: TenantDep, session: SessionDep, store: StoreDep,
               range_: Annotated[str | None, Header(alias="Range")] = None,
               if_none_match: Annotated[str | None, Header()] = None,
               if_range: Annotated[str | None, Header()] = None) -> Response:
    ck = service.final_model(session, tenant.id, job_id)
    return object_download(store, ck, f"{job_id}.safetensors", range_, if_none_match,
                           if_range=if_range, head=True)


@router.get("/{job_id}/checkpoints/{checkpoint_id}", response_class=StreamingResponse,
            responses={**_DOWNLOAD_RESPONSES, **problem_responses(404)})
def download_checkpoint(job_id: ResourceId, checkpoint_id: ResourceId, tenant: TenantDep,
                        session: SessionDep, store: StoreDep, settings: SettingsDep,
                        redirect: bool = False,
                        range_: Annotated[str | None, Header(alias="Range")] = None,
                        if_none_match: Annotated[str | None, Header()] = None,
                        if_range: Annotated[str | None, Header()] = None) -> Response:
    """One checkpoint's safetensors file (a layer, an epoch or the final model)."""
    ck = service.checkpoint(session, tenant.id, job_id, checkpoint_id)
    if redirect and (url := store.presign(ck.object_key, settings.presign_seconds)):
        return RedirectResponse(url, status_code=307)
    return object_download(store, ck, f"{job_id}-{ck.kind}-{checkpoint_id}.safetensors", range_,
                           if_none_match, if_range=if_range)


@router.post("/{job_id}/predict", response_model=PredictResponse,
             responses=problem_responses(409, 410))
def predict(job_id: ResourceId, body: PredictRequest, tenant: TenantDep, session: SessionDep,
            store: StoreDep) -> PredictResponse:
    labels, probs, classes = service.predict(session, store, tenant.id, job_id, body.inputs)
    return PredictResponse(predictions=labels, probabilities=probs, classes=classes)
