"""/v1/sweeps: HTTP only."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response

from api.deps import SessionDep, SettingsDep, TenantDep
from api.schemas.common import ResourceId, problem_responses
from api.schemas.sweeps import SWEEP_EXAMPLE, SweepOut, SweepRequest
from api.services import sweeps as service

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])


@router.post("", status_code=202, response_model=SweepOut, responses=problem_responses(429))
def create_sweep(request: Annotated[SweepRequest, Body(openapi_examples={
                     "dr-weight-by-seed": {"summary": "DR weight x 3 seeds",
                                           "value": SWEEP_EXAMPLE}})],
                 tenant: TenantDep, session: SessionDep, settings: SettingsDep,
                 response: Response) -> SweepOut:
    sweep, _ = service.create_sweep(session, settings, tenant.id, request)
    response.headers["Location"] = f"/v1/sweeps/{sweep.id}"
    return service.sweep_view(session, sweep)


@router.get("/{sweep_id}", response_model=SweepOut)
def get_sweep(sweep_id: ResourceId, tenant: TenantDep, session: SessionDep) -> SweepOut:
    return service.sweep_view(session, service.get_sweep(session, tenant.id, sweep_id))
