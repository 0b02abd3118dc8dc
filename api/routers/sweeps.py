"""/v1/sweeps: HTTP only."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from api.deps import SessionDep, SettingsDep, StoreDep, TenantDep
from api.schemas.common import ResourceId, headers, problem_responses
from drtrain.sweeps import service
from drtrain.sweeps.schemas import SWEEP_EXAMPLE, SweepList, SweepOut, SweepRequest

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])


@router.post("", status_code=202, response_model=SweepOut,
             responses={202: headers("Location"), **problem_responses(409, 422, 429)})
def create_sweep(request: Annotated[SweepRequest, Body(openapi_examples={
                     "dr-weight-by-seed": {"summary": "DR weight x 3 seeds",
                                           "value": SWEEP_EXAMPLE}})],
                 tenant: TenantDep, session: SessionDep, settings: SettingsDep,
                 response: Response) -> SweepOut:
    sweep, _ = service.create_sweep(session, settings, tenant.id, request)
    response.headers["Location"] = f"/v1/sweeps/{sweep.id}"
    return service.sweep_view(session, sweep)


@router.get("", response_model=SweepList)
def list_sweeps(tenant: TenantDep, session: SessionDep,
                page_size: Annotated[int, Query(ge=1, le=200)] = 50,
                page_token: Annotated[str | None, Query(max_length=500)] = None) -> SweepList:
    return service.list_sweeps(session, tenant.id, page_size, page_token)


@router.get("/{sweep_id}", response_model=SweepOut)
def get_sweep(sweep_id: ResourceId, tenant: TenantDep, session: SessionDep) -> SweepOut:
    return service.sweep_view(session, service.get_sweep(session, tenant.id, sweep_id))


@router.post("/{sweep_id}/cancel", status_code=202, response_model=SweepOut,
             responses={200: {"description": "Nothing left to cancel: every job of the sweep "
                                             "has ended or is already stopping",
                              "model": SweepOut}, **problem_responses(409)})
def cancel_sweep(sweep_id: ResourceId, tenant: TenantDep, session: SessionDep,
                 settings: SettingsDep, response: Response) -> SweepOut:
    sweep, cancelled = service.cancel_sweep(session, settings, tenant.id, sweep_id)
    if not cancelled:
        response.status_code = 200
    return service.sweep_view(session, sweep)


@router.delete("/{sweep_id}", status_code=204, response_class=Response,
               responses=problem_responses(409))
def delete_sweep(sweep_id: ResourceId, tenant: TenantDep, session: SessionDep,
                 store: StoreDep) -> Response:
    service.delete_sweep(session, store, tenant.id, sweep_id)
    return Response(status_code=204)
