"""Names, tags and warnings on jobs: stored at submit, shown in the view, filtered by tag."""
from __future__ import annotations

import pytest

from drtrain.kit.models import Dataset
from tests.factories import add_dataset, small_spec, tenant_id


def _submit(client, auth, spec: dict) -> dict:  # noqa: ANN001
    resp = client.post("/v1/jobs", json=spec, headers=auth)
    assert resp.status_code == 202, resp.text
    return resp.json()


def test_name_and_tags_are_stored_and_shown(client, db, auth_a, published) -> None:
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


def test_a_tiny_dataset_warns_at_submit(client, db, auth_a, published) -> None:
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


def test_the_list_filters_by_tag(client, db, auth_a, auth_b, published) -> None:
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
