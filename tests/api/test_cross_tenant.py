"""Tenant isolation on every route that takes an id.

Tenant A owns one object of each kind (a dataset, a succeeded job with metrics, checkpoints
and a model, a queued job, a sweep). Tenant B, with a valid key, asks for each of them on
every route: the answer is 404 (never 403, never A's object), and nothing of A's changes.

The routes come from ``app.routes``; a route with a path parameter that no case below
covers fails ``test_every_route_with_an_id_is_covered``, so a new route cannot be missed.
"""
from __future__ import annotations

import json
import re

import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from drtrain.kit.models import Checkpoint, Dataset, Job, MetricPoint, Sweep
from drtrain.kit.storage import ObjectStore
from tests.factories import World, seed_tenant, small_spec, tenant_id

_PARAM = re.compile(r"\{[^}]+\}")


def snapshot(db: Session, store: ObjectStore, owner: str) -> str:
    """Everything of ``owner`` that a request could change, as one comparable string."""
    db.expire_all()
    datasets = db.scalars(select(Dataset).where(Dataset.tenant_id == owner)
                          .order_by(Dataset.id)).all()
    jobs = db.scalars(select(Job).where(Job.tenant_id == owner).order_by(Job.id)).all()
    job_ids = [j.id for j in jobs]
    sweeps = db.scalars(select(Sweep.id).where(Sweep.tenant_id == owner).order_by(Sweep.id)).all()
    checkpoints = db.scalars(select(Checkpoint).where(Checkpoint.job_id.in_(job_ids))
                             .order_by(Checkpoint.id)).all()
    n_points = db.scalar(select(func.count()).select_from(MetricPoint)
                         .where(MetricPoint.job_id.in_(job_ids)))
    return json.dumps({
        "datasets": [(d.id, d.name, d.sha256, d.object_key) for d in datasets],
        "jobs": [(j.id, j.status, j.status_reason, j.cancel_requested, j.attempt, j.updated_at)
                 for j in jobs],
        "sweeps": list(sweeps),
        "checkpoints": [(c.id, c.sha256, store.exists(c.object_key)) for c in checkpoints],
        "metric_points": n_points,
    }, default=str, sort_keys=True)


@pytest.fixture
def world_a(db, store, auth_a) -> World:  # noqa: ANN001
    return seed_tenant(db, store, tenant_id(db, "tenant-a"))


# (method, route path, path parameters from A's world, JSON body) for every route with an id.
# The ids are the ones that would succeed for A, so a 404 for B is isolation, not absence.
def _cases(w: World) -> list[tuple[str, str, dict[str, str], dict | None]]:
    predict_body = {"inputs": [[0.1, 0.2, 0.3]]}
    return [
        ("GET", "/v1/datasets/{dataset_id}", {"dataset_id": w.dataset_id}, None),
        ("DELETE", "/v1/datasets/{dataset_id}", {"dataset_id": w.dataset_id}, None),
        ("GET", "/v1/jobs/{job_id}", {"job_id": w.job_id}, None),
        ("DELETE", "/v1/jobs/{job_id}", {"job_id": w.job_id}, None),
        ("GET", "/v1/jobs/{job_id}/metrics", {"job_id": w.job_id}, None),
        ("GET", "/v1/jobs/{job_id}/logs", {"job_id": w.job_id}, None),
        ("GET", "/v1/jobs/{job_id}/events", {"job_id": w.job_id}, None),
        ("POST", "/v1/jobs/{job_id}/cancel", {"job_id": w.queued_job_id}, None),
        ("GET", "/v1/jobs/{job_id}/checkpoints", {"job_id": w.job_id}, None),
        ("GET", "/v1/jobs/{job_id}/model", {"job_id": w.job_id}, None),
        ("GET", "/v1/jobs/{job_id}/checkpoints/{checkpoint_id}",
         {"job_id": w.job_id, "checkpoint_id": w.checkpoint_id}, None),
        ("POST", "/v1/jobs/{job_id}/predict", {"job_id": w.job_id}, predict_body),
        ("GET", "/v1/sweeps/{sweep_id}", {"sweep_id": w.sweep_id}, None),
        ("DELETE", "/v1/sweeps/{sweep_id}", {"sweep_id": w.sweep_id}, None),
        ("POST", "/v1/sweeps/{sweep_id}/cancel", {"sweep_id": w.sweep_id}, None),
    ]


def all_routes(app) -> list[tuple[str, str]]:  # noqa: ANN001
    """(method, path) of every HTTP route, routers included at any depth (FastAPI keeps
    included routers nested in ``app.routes``; ``iter_route_contexts`` flattens them)."""
    routes = list(iter_route_contexts(app.routes))
    return [(method, route.path) for route in routes if route.path
            for method in sorted(route.methods or ()) if method != "HEAD"]


def _routes_with_ids(app) -> set[tuple[str, str]]:  # noqa: ANN001
    # Tenancy is a /v1 matter; the web app's static files (/app/...) belong to no tenant.
    return {(method, path) for method, path in all_routes(app)
            if path.startswith("/v1/") and _PARAM.search(path)}


_DUMMY = World(dataset_id="d", job_id="j", queued_job_id="q", sweep_id="s", checkpoint_id="c")
CASE_KEYS = [(method, path) for method, path, _, _ in _cases(_DUMMY)]


def test_every_route_with_an_id_is_covered(app) -> None:  # noqa: ANN001
    covered = set(CASE_KEYS)
    routes = _routes_with_ids(app)
    # The enumeration itself must see the routers' routes, or this test would pass vacuously.
    assert ("GET", "/v1/jobs") in all_routes(app)
    assert routes, "no route with a path parameter found"
    missing = routes - covered
    assert not missing, f"routes with an id and no cross-tenant case: {sorted(missing)}"
    assert not covered - routes, f"cases for routes that no longer exist: {covered - routes}"


def test_the_owner_gets_every_case(client, auth_a, world_a) -> None:  # noqa: ANN001
    """The control: each id really resolves for A, so B's 404 below means isolation."""
    for method, path, params, body in _cases(world_a):
        if method == "DELETE":
            continue  # checked last in the next test: it would remove A's dataset here
        resp = client.request(method, path.format(**params), headers=auth_a, json=body)
        assert resp.status_code < 300, (method, path, resp.status_code, resp.text)


def _assert_not_found(resp) -> None:  # noqa: ANN001
    assert resp.status_code == 404, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == 404 and body["title"] and body["detail"]
    # The problem may echo the id B sent; it must never carry A's data.
    assert set(body) <= {"type", "title", "status", "detail", "errors"}


@pytest.mark.parametrize("method, path", CASE_KEYS, ids=[f"{m} {p}" for m, p in CASE_KEYS])
def test_other_tenant_gets_404_and_changes_nothing(client, db, store, auth_a, auth_b, world_a,
                                                   method, path) -> None:  # noqa: ANN001
    [(params, body)] = [(pa, bo) for m, p, pa, bo in _cases(world_a) if (m, p) == (method, path)]
    owner = tenant_id(db, "tenant-a")
    before = snapshot(db, store, owner)
    resp = client.request(method, path.format(**params), headers=auth_b, json=body)
    _assert_not_found(resp)
    assert snapshot(db, store, owner) == before
    # And A still sees the object afterwards (DELETE and cancel were refused, not done).
    if method in ("DELETE", "POST"):
        get_path = path.rsplit("/", 1)[0] if path.endswith(("/cancel", "/predict")) else path
        again = client.get(get_path.format(**params), headers=auth_a)
        assert again.status_code == 200, again.text


def test_lists_show_only_own_objects(client, auth_a, auth_b, world_a) -> None:  # noqa: ANN001
    own = client.get("/v1/datasets", headers=auth_b).json()["items"]
    assert world_a.dataset_id not in {d["id"] for d in own}
    jobs = client.get("/v1/jobs", headers=auth_b).json()["items"]
    assert not {world_a.job_id, world_a.queued_job_id} & {j["id"] for j in jobs}
    assert {world_a.job_id, world_a.queued_job_id} <= {
        j["id"] for j in client.get("/v1/jobs", headers=auth_a).json()["items"]}


def test_other_tenants_dataset_cannot_be_trained_on(client, db, store, auth_a, auth_b,
                                                    world_a) -> None:  # noqa: ANN001
    """Naming A's dataset in a spec (job, test set or sweep) is 'does not exist' for B."""
    owner = tenant_id(db, "tenant-a")
    before = snapshot(db, store, owner)
    for body, url in [
        (small_spec(world_a.dataset_id), "/v1/jobs"),
        (small_spec("builtin:digits", test_dataset_id=world_a.dataset_id), "/v1/jobs"),
        ({"base": small_spec(world_a.dataset_id), "grid": {"seed": [0, 1]}}, "/v1/sweeps"),
    ]:
        resp = client.post(url, json=body, headers=auth_b)
        assert resp.status_code == 422, resp.text
        assert "does not exist" in resp.json()["detail"]
    assert snapshot(db, store, owner) == before
    tenant_b = tenant_id(db, "tenant-b")
    assert db.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant_b)) == 0
