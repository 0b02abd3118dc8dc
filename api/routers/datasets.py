"""``/v1/datasets``: HTTP only; the work is in drtrain.datasets.service."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from api.deps import SessionDep, SettingsDep, StoreDep, TenantDep, UploadSlotDep
from api.schemas.common import ResourceId, headers, problem_responses
from api.uploads import parse_multipart
from drtrain.datasets import intake, service
from drtrain.datasets.schemas import DatasetList, DatasetOut
from drtrain.kit.errors import Invalid

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

_TEXT = {"type": "string", "maxLength": intake.MAX_TEXT_FIELD,
         "pattern": intake.TEXT_FIELD_PATTERN}
_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "CSV with a header row, NPZ (X, y, optional groups), or "
                                "gzipped IDX images"},
        "labels_file": {"type": "string", "format": "binary",
                        "description": "IDX labels (only with IDX images)"},
        "name": {**_TEXT, "minLength": 1},
        "label_column": {**_TEXT, "default": "label"},
        "side_info_column": {**_TEXT, "description": "grouping used by DR instead of the labels"},
    }}}}}}


@router.post("", status_code=202, response_model=DatasetOut, openapi_extra=_UPLOAD_BODY,
             responses={202: headers("Location"), **problem_responses(413, 422, 507)})
async def upload_dataset(request: Request, session: SessionDep, store: StoreDep,
                         settings: SettingsDep, tenant: TenantDep,
                         _slot: UploadSlotDep) -> Response:
    # The tenant was checked in a short session of its own (api.deps.get_tenant) and
    # ``session`` opens no connection before its first query, so no connection is held while
    # the body arrives; the slot bounds this tenant's concurrent uploads (429) and
    # BodyTimeoutMiddleware drops a body that stalls (408).
    form = await parse_multipart(request, settings.max_upload_bytes)
    try:
        upload = form.files.get("file")
        if upload is None:
            raise Invalid("file: a file part named 'file' is required")
        labels = form.files.get("labels_file")
        # Copying and the header checks are blocking: off the event loop (422 at once).
        received = await run_in_threadpool(
            intake.receive, settings, data=upload.file, filename=upload.filename or "",
            name=form.fields.get("name"),
            label_column=form.fields.get("label_column") or "label",
            side_info_column=form.fields.get("side_info_column") or None,
            labels=labels.file if labels is not None else None)
    finally:
        await form.close()
    # The whole file is checked in a process of its own, from now on while it is stored.
    check = intake.start_check(request.app.state.validator, received)
    factory = request.app.state.sessionmaker
    try:
        staged = await run_in_threadpool(intake.admit, factory, store, settings, tenant.id,
                                         received)
    except BaseException:
        await intake.abandon(check, received)
        raise
    return JSONResponse(staged.dataset.model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v1/datasets/{staged.dataset.id}"},
                        background=BackgroundTask(intake.finish_upload, factory, store, check,
                                                  staged))


@router.get("", response_model=DatasetList)
def list_datasets(session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> DatasetList:
    return DatasetList(items=service.list_datasets(session, settings, tenant))


@router.get("/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: ResourceId, session: SessionDep, settings: SettingsDep,
                tenant: TenantDep) -> DatasetOut:
    return service.get_dataset(session, settings, tenant, dataset_id)


@router.delete("/{dataset_id}", status_code=204, responses=problem_responses(409))
def delete_dataset(dataset_id: ResourceId, session: SessionDep, store: StoreDep,
                   tenant: TenantDep) -> Response:
    service.delete_dataset(session, store, tenant, dataset_id)
    return Response(status_code=204)
