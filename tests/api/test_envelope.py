"""Every list answers one envelope: {"items": [...], "next_page_token": ...} (metrics:
{"items": [...], "next_since": ...}), found by walking the app's routes, then asked for real."""
from __future__ import annotations

from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel

from tests.factories import World, seed_tenant, tenant_id

# GET /v1 routes of one object that is not in a collection (the tenant's queue lists its next
# jobs, bounded by `limit`, inside that one object).
SINGLETONS = {"/v1/settings", "/v1/queue"}


def _list_routes(app) -> dict[str, type[BaseModel]]:  # noqa: ANN001
    """GET /v1 routes that name a collection (the path does not end in an id, and is not a
    singleton) and answer a JSON model (streams and downloads have none)."""
    found = {}
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or "GET" not in (route.methods or ()):
            continue
        model = route.original_route.response_model
        path = route.path or ""
        if path.startswith("/v1/") and not path.endswith("}") and path not in SINGLETONS \
                and isinstance(model, type) \
                and issubclass(model, BaseModel):
            found[str(route.path)] = model
    return found


def test_every_list_route_declares_the_envelope(app) -> None:  # noqa: ANN001
    routes = _list_routes(app)
    assert {"/v1/datasets", "/v1/jobs", "/v1/jobs/{job_id}/metrics",
            "/v1/jobs/{job_id}/checkpoints", "/v1/sweeps"} <= set(routes)
    for path, model in routes.items():
        fields = set(model.model_fields)
        cursor = "next_since" if path.endswith("/metrics") else "next_page_token"
        assert fields == {"items", cursor}, (path, fields)


def test_every_list_route_answers_the_envelope(app, client, db, store, auth_a) -> None:  # noqa: ANN001
    world: World = seed_tenant(db, store, tenant_id(db, "tenant-a"))
    for path in _list_routes(app):
        url = path.format(job_id=world.job_id)
        body = client.get(url, headers=auth_a).json()
        assert isinstance(body["items"], list) and body["items"], (url, body)
        assert set(body) == {"items", "next_since" if path.endswith("/metrics") else "next_page_token"}
