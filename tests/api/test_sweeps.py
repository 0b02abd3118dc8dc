"""POST/GET /v1/sweeps: grid expansion, validation of every point, seed-pooled summary."""
from __future__ import annotations

import statistics

import pytest
from sqlalchemy import select

from drtrain.kit.models import Checkpoint, Job, JobStatus, MetricPoint, Sweep
from tests.factories import add_dataset, add_job, small_spec, tenant_id

GRID = {"pretrain.dr.weight": [0, 0.5], "seed": [0, 1, 2]}


@pytest.fixture
def ds_id(db, auth_a) -> str:  # noqa: ANN001
    return add_dataset(db, tenant_id(db)).id


def test_create_sweep_makes_one_queued_child_per_point(client, db, auth_a, ds_id,
                                                       published) -> None:
    resp = client.post("/v1/sweeps", json={"base": small_spec(ds_id), "grid": GRID},
                       headers=auth_a)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert resp.headers["location"] == f"/v1/sweeps/{body['id']}"
    points = [c["grid_point"] for c in body["children"]]
    assert sorted((p["pretrain.dr.weight"], p["seed"]) for p in points) == [
        (w, s) for w in (0, 0.5) for s in (0, 1, 2)]
    assert all(c["status"] == "queued" for c in body["children"])
    jobs = db.scalars(select(Job).where(Job.sweep_id == body["id"])).all()
    assert len(jobs) == 6
    for job in jobs:
        assert job.spec["seed"] == job.grid_point["seed"]
        assert job.spec["pretrain"]["dr"]["weight"] == job.grid_point["pretrain.dr.weight"]
    assert sorted(j for j, _ in published) == sorted(j.id for j in jobs)
    assert all(after_commit for _, after_commit in published)
    assert [r["n"] for r in body["summary"]] == [3, 3]
    # a job read on its own, or in a list, says which point of its sweep it runs
    child = body["children"][0]
    job = client.get(f"/v1/jobs/{child['job_id']}", headers=auth_a).json()
    assert job["sweep_id"] == body["id"] and job["grid_point"] == child["grid_point"]
    listed = client.get("/v1/jobs", headers=auth_a).json()["items"]
    assert {j["id"]: j["grid_point"] for j in listed}[child["job_id"]] == child["grid_point"]


def test_invalid_grid_value_is_422_naming_path_and_value(client, db, auth_a, ds_id,
                                                          published) -> None:
    grid = {"seed": [0, 1], "pretrain.cd_k": [1, 99]}
    resp = client.post("/v1/sweeps", json={"base": small_spec(ds_id), "grid": grid},
                       headers=auth_a)
    assert resp.status_code == 422
    assert "pretrain.cd_k" in resp.json()["detail"] and "99" in resp.json()["detail"]
    assert resp.json()["errors"][0]["loc"] == ["body", "grid", "pretrain.cd_k"]
    assert published == [] and db.scalar(select(Sweep.id)) is None


def test_wrong_json_types_in_base_or_grid_are_422_naming_the_field(client, db, auth_a, ds_id,
                                                                  published) -> None:
    bad_base = client.post("/v1/sweeps", json={"base": small_spec(ds_id, seed="7"),
                                               "grid": {"seed": [0, 1]}}, headers=auth_a)
    assert bad_base.status_code == 422, bad_base.text
    assert [e["loc"] for e in bad_base.json()["errors"]] == [["body", "base", "seed"]]
    for path, value in [("seed", "1"), ("pretrain.epochs", 1.0), ("pretrain.persistent", 1)]:
        resp = client.post("/v1/sweeps", json={"base": small_spec(ds_id),
                                               "grid": {path: [value]}}, headers=auth_a)
        assert resp.status_code == 422, resp.text
        assert resp.json()["errors"][0]["loc"] == ["body", "grid", path]
    assert published == [] and db.scalar(select(Sweep.id)) is None


@pytest.mark.parametrize("grid, fragment", [
    ({"pretrain.no_such_field": [1]}, "pretrain.no_such_field"),
    ({"seed": []}, "at least one value"),
    ({"seed": list(range(17)), "finetune.epochs": list(range(16))}, "at most 256"),
])
def test_grid_errors(client, db, auth_a, ds_id, published, grid, fragment) -> None:
    resp = client.post("/v1/sweeps", json={"base": small_spec(ds_id), "grid": grid},
                       headers=auth_a)
    assert resp.status_code == 422, resp.text
    assert fragment in resp.json()["detail"]
    assert published == []


def test_dataset_check_runs_for_every_point(client, db, auth_a, published) -> None:
    wide = add_dataset(db, tenant_id(db), feature_range=(-1.0, 1.0))
    grid = {"model.visible_units": ["gaussian", "bernoulli"]}
    resp = client.post("/v1/sweeps", json={"base": small_spec(wide.id), "grid": grid},
                       headers=auth_a)
    assert resp.status_code == 422
    assert "bernoulli" in resp.json()["detail"]


def test_get_sweep_summarises_with_seeds_pooled(client, db, auth_a, auth_b, ds_id,
                                                published) -> None:
    body = client.post("/v1/sweeps", json={"base": small_spec(ds_id), "grid": GRID},
                       headers=auth_a).json()
    accuracy = {(0, 0): 0.80, (0, 1): 0.84, (0, 2): 0.83, (0.5, 0): 0.90, (0.5, 1): 0.88}
    for job in db.scalars(select(Job).where(Job.sweep_id == body["id"])):
        key = (job.grid_point["pretrain.dr.weight"], job.grid_point["seed"])
        if key in accuracy:
            job.status = JobStatus.succeeded
            job.result = {"test": {"accuracy": accuracy[key]}, "epochs": 2, "note": "x"}
    db.commit()
    resp = client.get(f"/v1/sweeps/{body['id']}", headers=auth_a)
    assert resp.status_code == 200
    out = resp.json()
    assert len(out["children"]) == 6 and out["grid"] == GRID
    rows = {r["point"]["pretrain.dr.weight"]: r for r in out["summary"]}
    assert set(rows) == {0, 0.5} and all("seed" not in r["point"] for r in out["summary"])
    for weight, n_done in ((0, 3), (0.5, 2)):
        values = [v for (w, _), v in accuracy.items() if w == weight]
        row = rows[weight]
        assert (row["n"], row["n_done"]) == (3, n_done)
        acc = row["metrics"]["test.accuracy"]
        assert acc["mean"] == pytest.approx(statistics.mean(values))
        assert acc["std"] == pytest.approx(statistics.stdev(values))
        assert acc["n"] == n_done
        assert row["metrics"]["epochs"] == {"mean": 2.0, "std": 0.0, "n": n_done}
        assert "note" not in row["metrics"]
    assert client.get(f"/v1/sweeps/{body['id']}", headers=auth_b).status_code == 404
    assert client.get(f"/v1/sweeps/{body['id']}").status_code == 401


def test_list_sweeps_pages_newest_first_and_is_per_tenant(client, db, auth_a, auth_b, ds_id,
                                                          published) -> None:
    made = []
    for seeds in ([0], [0, 1], [0, 1, 2]):
        resp = client.post("/v1/sweeps", json={"base": small_spec(ds_id), "grid": {"seed": seeds}},
                           headers=auth_a)
        assert resp.status_code == 202, resp.text
        made.append(resp.json()["id"])
    first = client.get("/v1/sweeps", params={"page_size": 2}, headers=auth_a).json()
    assert [s["id"] for s in first["items"]] == made[::-1][:2]
    assert first["items"][0]["n_children"] == 3
    assert first["items"][0]["children_by_status"] == {"queued": 3}
    rest = client.get("/v1/sweeps", params={"page_size": 2, "page_token": first["next_page_token"]},
                      headers=auth_a).json()
    assert [s["id"] for s in rest["items"]] == [made[0]] and rest["next_page_token"] is None
    assert client.get("/v1/sweeps", headers=auth_b).json() == {"items": [], "next_page_token": None}
    bad = client.get("/v1/sweeps", params={"page_token": "nonsense"}, headers=auth_a)
    assert bad.status_code == 422


def _sweep_with_children(db, store, owner: str, statuses: list[JobStatus]) -> tuple[Sweep, dict]:  # noqa: ANN001
    """A sweep whose children have ``statuses``, each with a stored model, its row and a
    metric point; returns the sweep and {job id: object key}."""
    sweep = Sweep(tenant_id=owner, base=small_spec("builtin:digits"), grid={"seed": [0]})
    db.add(sweep)
    db.flush()
    keys = {}
    for seed, status in enumerate(statuses):
        job = add_job(db, owner, status, sweep_id=sweep.id, grid_point={"seed": seed})
        stored = store.put_stream(f"jobs/{job.id}/final.safetensors", [b"m" * 10])
        db.add(Checkpoint(job_id=job.id, kind="final", attempt=1, object_key=stored.key,
                          sha256=stored.sha256, size_bytes=stored.size_bytes))
        db.add(MetricPoint(job_id=job.id, seq=1, attempt=1, phase="finetune", layer=None,
                           layer_key=-1, epoch=1, name="loss", value=1.0))
        keys[job.id] = stored.key
    db.commit()
    return sweep, keys


def test_delete_sweep_removes_it_its_jobs_and_their_objects(client, db, store, auth_a) -> None:  # noqa: ANN001
    owner = tenant_id(db)
    sweep, keys = _sweep_with_children(db, store, owner, [JobStatus.succeeded, JobStatus.failed,
                                                          JobStatus.cancelled])
    other, other_keys = _sweep_with_children(db, store, owner, [JobStatus.succeeded])
    resp = client.delete(f"/v1/sweeps/{sweep.id}", headers=auth_a)
    assert resp.status_code == 204, resp.text
    assert resp.content == b""
    db.expire_all()
    assert db.get(Sweep, sweep.id) is None
    assert db.scalars(select(Job.id).where(Job.id.in_(keys))).all() == []
    assert db.scalars(select(Checkpoint.id).where(Checkpoint.job_id.in_(keys))).all() == []
    assert db.scalars(select(MetricPoint.id).where(MetricPoint.job_id.in_(keys))).all() == []
    assert not any(store.exists(k) for k in keys.values())
    assert client.get(f"/v1/sweeps/{sweep.id}", headers=auth_a).status_code == 404
    assert client.delete(f"/v1/sweeps/{sweep.id}", headers=auth_a).status_code == 404
    # Another sweep of the same tenant is untouched.
    assert client.get(f"/v1/sweeps/{other.id}", headers=auth_a).status_code == 200
    assert all(store.exists(k) for k in other_keys.values())


def test_delete_sweep_with_active_jobs_is_409_naming_them_and_deletes_nothing(
        client, db, store, auth_a) -> None:  # noqa: ANN001
    owner = tenant_id(db)
    statuses = [JobStatus.succeeded, JobStatus.queued, JobStatus.running, JobStatus.cancelling]
    sweep, keys = _sweep_with_children(db, store, owner, statuses)
    resp = client.delete(f"/v1/sweeps/{sweep.id}", headers=auth_a)
    assert resp.status_code == 409, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    detail = resp.json()["detail"]
    ids = list(keys)
    assert ids[0] not in detail  # the ended job is not named
    for job_id, status in zip(ids[1:], statuses[1:]):
        assert f"{job_id} ({status.value})" in detail
    assert "cancel" in detail
    db.expire_all()
    assert db.get(Sweep, sweep.id) is not None
    assert sorted(db.scalars(select(Job.id).where(Job.sweep_id == sweep.id))) == sorted(ids)
    assert len(db.scalars(select(Checkpoint.id).where(Checkpoint.job_id.in_(ids))).all()) == 4
    assert all(store.exists(k) for k in keys.values())


@pytest.mark.parametrize("method, action", [("DELETE", ""), ("POST", "/cancel")])
def test_delete_or_cancel_of_another_tenants_or_an_unknown_sweep_is_404(
        client, db, store, auth_a, auth_b, method, action) -> None:  # noqa: ANN001
    sweep, keys = _sweep_with_children(db, store, tenant_id(db), [JobStatus.queued])
    resp = client.request(method, f"/v1/sweeps/{sweep.id}{action}", headers=auth_b)
    assert resp.status_code == 404, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert client.request(method, f"/v1/sweeps/{'0' * 32}{action}",
                          headers=auth_a).status_code == 404
    db.expire_all()
    assert db.get(Sweep, sweep.id) is not None
    assert db.get(Job, next(iter(keys))).status == JobStatus.queued
    assert all(store.exists(k) for k in keys.values())


def test_cancel_sweep_stops_every_active_job_and_leaves_ended_ones(client, db, store, auth_a,
                                                                   settings) -> None:  # noqa: ANN001
    statuses = [JobStatus.succeeded, JobStatus.queued, JobStatus.running, JobStatus.cancelling,
                JobStatus.failed]
    sweep, keys = _sweep_with_children(db, store, tenant_id(db), statuses)
    ids = list(keys)
    resp = client.post(f"/v1/sweeps/{sweep.id}/cancel", headers=auth_a)
    assert resp.status_code == 202, resp.text
    assert resp.json()["id"] == sweep.id
    after = {c["job_id"]: c["status"] for c in resp.json()["children"]}
    assert [after[i] for i in ids] == ["succeeded", "cancelled", "cancelling", "cancelling",
                                       "failed"]
    db.expire_all()
    assert [db.get(Job, i).status for i in ids] == [JobStatus.succeeded, JobStatus.cancelled,
                                                    JobStatus.cancelling, JobStatus.cancelling,
                                                    JobStatus.failed]
    assert db.get(Job, ids[1]).status_reason == "cancelled by user"
    # the running job's worker is told at once (embedded: a flag it looks for between batches)
    flags = settings.broker_folder / "cancel"
    assert (flags / ids[2]).exists() and not (flags / ids[1]).exists()
    # the ended jobs keep their models
    assert store.exists(keys[ids[0]])
    # nothing left to cancel: 200, nothing changed
    again = client.post(f"/v1/sweeps/{sweep.id}/cancel", headers=auth_a)
    assert again.status_code == 200, again.text
    assert {c["job_id"]: c["status"] for c in again.json()["children"]} == after


def test_a_cancelled_sweeps_slots_go_to_the_tenants_next_job_not_its_own(
        app, client, db, auth_a, ds_id, published) -> None:  # noqa: ANN001
    """Two running slots: the sweep's first two children hold them, the third waits, and so
    does a job submitted after the sweep. Cancelling the sweep hands both slots on once, after
    every child is cancelled: to the job outside the sweep, never to a child about to go."""
    app.state.settings = app.state.settings.model_copy(update={"max_concurrent_jobs_per_tenant": 2})
    sweep = client.post("/v1/sweeps", json={"base": small_spec(ds_id), "grid": {"seed": [0, 1, 2]}},
                        headers=auth_a).json()
    later = client.post("/v1/jobs", json=small_spec(ds_id, seed=9), headers=auth_a).json()
    assert later["dispatched_at"] is None
    before = [job_id for job_id, _ in published]

    resp = client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=auth_a)
    assert resp.status_code == 202, resp.text
    assert {c["status"] for c in resp.json()["children"]} == {"cancelled"}
    assert [job_id for job_id, _ in published] == [*before, later["id"]]
    assert published[-1][1]  # published once the cancel has committed
    db.expire_all()
    assert db.get(Job, later["id"]).dispatched_at is not None
