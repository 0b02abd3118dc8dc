"""Names, tags and warnings on jobs: stored at submit, shown in the view, filtered by tag."""
from __future__ import annotations

import numpy as np
import pytest

from drtrain.jobs.spec import JobSpec
from drtrain.jobs.warnings import merge, training_warnings, validation_rows
from drtrain.kit.models import Dataset
from tests.api.test_jobs import add_dataset, published, small_spec, tenant_id  # noqa: F401


def _submit(client, auth, spec: dict) -> dict:  # noqa: ANN001
    resp = client.post("/v1/jobs", json=spec, headers=auth)
    assert resp.status_code == 202, resp.text
    return resp.json()


def test_name_and_tags_are_stored_and_shown(client, db, auth_a, published) -> None:  # noqa: F811
    ds = add_dataset(db, tenant_id(db))
    job = _submit(client, auth_a, small_spec(ds.id, name="first try", tags=["study", "h1.0"]))
    assert job["name"] == "first try" and job["tags"] == ["study", "h1.0"]
    again = client.get(f"/v1/jobs/{job['id']}", headers=auth_a).json()
    assert again["name"] == "first try" and again["tags"] == ["study", "h1.0"]
    assert again["spec"]["tags"] == ["study", "h1.0"]


@pytest.mark.parametrize("field, value", [
    ("tags", ["has space"]), ("tags", [""]), ("tags", ["x" * 65]), ("tags", ["t"] * 17),
    ("name", ""), ("name", "bad\x00name"), ("name", "x" * 201),
])
def test_bad_names_and_tags_are_422(client, db, auth_a, field, value) -> None:
    ds = add_dataset(db, tenant_id(db))
    resp = client.post("/v1/jobs", json=small_spec(ds.id, **{field: value}), headers=auth_a)
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["loc"][:2] == ["body", field]


def test_a_tiny_dataset_warns_at_submit(client, db, auth_a, published) -> None:  # noqa: F811
    owner = tenant_id(db)
    ds = add_dataset(db, owner)
    db.get(Dataset, ds.id).n_samples = 2
    db.get(Dataset, ds.id).class_counts = {"0": 1, "1": 1}
    db.commit()
    job = _submit(client, auth_a, small_spec(ds.id, pretrain={"epochs": 1, "batch_size": 128}))
    text = " | ".join(job["warnings"])
    assert "empty validation set" in text
    assert "pretrain.batch_size 128 is more than the 2 training rows" in text
    assert "2 class(es) have a single example" in text
    healthy = _submit(client, auth_a, small_spec(add_dataset(db, owner).id,
                                                  pretrain={"epochs": 1, "batch_size": 8},
                                                  finetune={"epochs": 1, "batch_size": 8}))
    assert healthy["warnings"] == []


def _spec(**kw: object) -> JobSpec:
    return JobSpec.model_validate({"dataset_id": "builtin:digits", **kw})


def test_dr_with_a_single_group_warns_only_when_dr_is_on() -> None:
    counts = {"a": 50, "b": 50}
    assert any("single group" in w for w in training_warnings(
        _spec(), n_rows=100, n_val=10, class_counts=counts, n_groups=1))
    off = _spec(pretrain={"dr": None}, finetune={"dr": None})
    assert training_warnings(off, n_rows=1000, n_val=100, class_counts=counts, n_groups=1) == []
    assert training_warnings(_spec(), n_rows=1000, n_val=100, class_counts=counts,
                             n_groups=None) == []


def test_validation_rows_matches_the_workers_split() -> None:
    from drtrain.jobs.validation_split import split_validation

    for n, f in [(2, 0.1), (10, 0.1), (1797, 0.1), (5, 0.5), (7, 0.0)]:
        _, val = split_validation(np.zeros(n, dtype=np.int64), f, 0)
        assert validation_rows(n, n, f) == len(val)


def test_validation_is_drawn_from_labelled_rows_only() -> None:
    from drtrain.jobs.validation_split import split_validation

    y = np.full(1000, -1, dtype=np.int64)
    y[::10] = np.arange(100) % 5  # 100 labelled rows of 1000
    train, val = split_validation(y, 0.2, 3)
    assert len(val) == 20 == validation_rows(100, 1000, 0.2)
    assert (y[val] >= 0).all()
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(1000))
    # every unlabelled row stays in training (pretraining uses it)
    assert set(np.flatnonzero(y < 0)) <= set(train.tolist())
    # with every row labelled the split is the plain seeded permutation it always was
    perm = np.random.default_rng(3).permutation(50)
    _, val_all = split_validation(np.zeros(50, dtype=np.int64), 0.2, 3)
    assert val_all.tolist() == sorted(perm[:10].tolist())


def test_merge_keeps_order_and_drops_repeats() -> None:
    assert merge(["a", "b"], ["b", "c"]) == ["a", "b", "c"]
    assert merge(None, ["x"]) == ["x"]


def test_the_list_filters_by_tag(client, db, auth_a, auth_b, published) -> None:  # noqa: F811
    ds = add_dataset(db, tenant_id(db))
    tagged = _submit(client, auth_a, small_spec(ds.id, tags=["study", "x"]))
    _submit(client, auth_a, small_spec(ds.id, tags=["other"]))
    _submit(client, auth_a, small_spec(ds.id))
    for include in ({}, {"include": "spec"}):
        page = client.get("/v1/jobs", params={"tag": "study", **include}, headers=auth_a).json()
        assert [j["id"] for j in page["items"]] == [tagged["id"]]
        assert page["items"][0]["tags"] == ["study", "x"]
    assert client.get("/v1/jobs", params={"tag": "study"}, headers=auth_b).json()["items"] == []
    assert client.get("/v1/jobs", params={"tag": "bad tag"}, headers=auth_a).status_code == 422
