"""Security properties: keys as hashes compared in constant time, revocation, no secret in
logs or reprs, production refusing embedded defaults, and per-tenant caps on active jobs
(single jobs and sweeps)."""
from __future__ import annotations

import inspect
import logging
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from typer.testing import CliRunner

from api.app import create_app
from drtrain.kit.models import ApiKey, Base, Job, JobStatus, Sweep
from drtrain.kit.settings import Settings, get_settings
from drtrain.kit.storage import S3Store, make_store
from drtrain.tenants import keys as keys_module
from drtrain.tenants.keys import LOOKUP_CHARS, create_key, hash_key, tenant_for_key
from tests.factories import add_dataset, small_spec, tenant_id

S3_SECRET = "s3-secret-4f1d9c2a7b-never-in-a-log"
PRODUCTION_ENV = {
    "DRTRAIN_ENVIRONMENT": "production",
    "DRTRAIN_DATABASE_URL": "postgresql+psycopg://drtrain:pw@db:5432/drtrain",
    "DRTRAIN_BROKER_URL": "redis://redis:6379/0",
    "DRTRAIN_STORAGE_URL": "s3://models/drtrain",
}


# ---------------------------------------------------------------- keys
def test_keys_are_stored_only_as_hashes(db) -> None:  # noqa: ANN001
    key = create_key(db, "hashes")
    secret_part = key[LOOKUP_CHARS:]
    db.flush()
    for table in Base.metadata.sorted_tables:  # every row of every table, every column
        dump = repr(db.execute(select(table)).all())
        assert key not in dump and secret_part not in dump, table.name
    row = db.scalars(select(ApiKey)).one()
    assert row.key_hash == hash_key(key) and len(row.key_hash) == 64


def _statements(db) -> list[str]:  # noqa: ANN001
    seen: list[str] = []
    event.listen(db.connection(), "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: seen.append(statement))
    return seen


def test_key_hash_is_compared_in_constant_time(db, monkeypatch) -> None:  # noqa: ANN001
    """The hash is compared in Python with hmac.compare_digest, never by SQL equality (an
    index lookup's timing would depend on how much of the hash matched)."""
    key = create_key(db, "ct")
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")  # same lookup prefix, other key
    calls: list[tuple[str, str]] = []
    real = keys_module.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    statements = _statements(db)
    assert tenant_for_key(db, key).name == "ct"
    assert calls == [(hash_key(key), hash_key(key))]
    calls.clear()
    assert tenant_for_key(db, wrong) is None
    assert calls == [(hash_key(key), hash_key(wrong))]  # compared, not skipped
    assert statements and not any("key_hash" in s.split("WHERE", 1)[-1] for s in statements
                                  if "WHERE" in s)
    source = inspect.getsource(keys_module.tenant_ref_for_key)  # tenant_for_key's check
    assert "compare_digest" in source
    assert not any(f in source for f in ("key_hash ==", "== wanted", "wanted ==", "!= wanted"))


def test_http_auth_goes_through_compare_digest(client, auth_a, monkeypatch) -> None:  # noqa: ANN001
    calls = []
    real = keys_module.hmac.compare_digest
    monkeypatch.setattr(keys_module.hmac, "compare_digest",
                        lambda a, b: calls.append(1) or real(a, b))
    assert client.get("/v1/datasets", headers=auth_a).status_code == 200
    assert calls


def test_revoked_key_is_refused_and_the_others_still_work(client, db) -> None:  # noqa: ANN001
    old, new = create_key(db, "rev"), create_key(db, "rev")
    row = db.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(old))).one()
    row.revoked_at = datetime.now(UTC)
    db.commit()
    resp = client.get("/v1/datasets", headers={"Authorization": f"Bearer {old}"})
    assert resp.status_code == 401 and "revoked" in resp.json()["detail"]
    assert resp.headers["www-authenticate"] == "Bearer"
    assert tenant_for_key(db, old) is None
    assert client.get("/v1/datasets", headers={"Authorization": f"Bearer {new}"}).status_code == 200


# ---------------------------------------------------------------- secrets in logs and reprs
def test_settings_never_show_the_s3_secret() -> None:
    settings = Settings(s3_access_key_id="AKIDEXAMPLE", s3_secret_access_key=S3_SECRET)
    for shown in (repr(settings), str(settings), settings.model_dump_json(),
                  repr(settings.model_dump())):
        assert S3_SECRET not in shown
    assert settings.s3_secret_access_key.get_secret_value() == S3_SECRET


def test_the_store_still_gets_the_real_secret() -> None:
    settings = Settings(storage_url="s3://bucket/p", s3_access_key_id="AKIDEXAMPLE",
                        s3_secret_access_key=S3_SECRET, s3_endpoint_url="http://127.0.0.1:9")
    store = make_store(settings)
    assert isinstance(store, S3Store)
    assert store.client._request_signer._credentials.secret_key == S3_SECRET
    assert S3_SECRET not in repr(store.client)


def test_no_secret_in_any_setting_default() -> None:
    secretish = [name for name in Settings.model_fields
                 if any(w in name for w in ("secret", "password", "token", "key"))]
    assert secretish, "the scan matched nothing: the field names changed"
    assert {name: Settings.model_fields[name].default for name in secretish} == dict.fromkeys(secretish)


def test_no_key_or_s3_secret_in_logs(app, db, engine, settings, s3_endpoint, caplog,
                                     capfd) -> None:  # noqa: ANN001
    """Everything logged (at DEBUG, every logger, boto and the moto server included) and
    printed while keys are made, auth fails, and an S3-configured app serves requests,
    fails on a missing bucket (a traceback is logged) and presigns a URL."""
    caplog.set_level(logging.DEBUG)
    key = create_key(db, "logs")
    db.commit()
    s3_settings = settings.model_copy(update={
        "storage_url": "s3://drtrain-logs/objects", "s3_endpoint_url": s3_endpoint,
        "s3_access_key_id": "AKIDEXAMPLE", "s3_secret_access_key": Settings(
            s3_secret_access_key=S3_SECRET).s3_secret_access_key})
    s3_app = create_app(s3_settings, engine=engine)
    s3_app.dependency_overrides = app.dependency_overrides  # the test's session
    s3_app.state.sessionmaker = app.state.sessionmaker
    auth = {"Authorization": f"Bearer {key}"}
    files = {"file": ("d.csv", b"a,label\n0,x\n1,y\n", "text/csv")}
    with TestClient(s3_app, raise_server_exceptions=False) as client:
        # The API made its bucket at start-up; without it, requests fail (and log a traceback).
        s3_app.state.store.client.delete_bucket(Bucket="drtrain-logs")
        for bad in (key[:-1] + "x", key + "x", "drt_", key.upper()):
            assert client.get("/v1/datasets", headers={"Authorization": f"Bearer {bad}"}
                              ).status_code == 401
        assert client.get("/readyz").status_code == 503  # the bucket does not exist yet
        assert client.post("/v1/datasets", headers=auth, files=files).status_code == 500
        assert s3_app.state.store.bucket == "drtrain-logs"
        s3_app.state.store.ensure_bucket()
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/datasets", headers=auth, files=files).status_code == 202
        url = s3_app.state.store.presign("datasets/x/data.csv", 60)
        assert url and S3_SECRET not in url
    records = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "unhandled error" in records  # the failing upload was logged, traceback and all
    assert any(r.name.startswith("botocore") for r in caplog.records)  # capture reached boto
    out, err = capfd.readouterr()
    for text in (records, out, err):
        assert key not in text and key[LOOKUP_CHARS:] not in text
        assert S3_SECRET not in text


# ---------------------------------------------------------------- production settings
def _production_env(monkeypatch, **overrides: str | None) -> None:  # noqa: ANN001
    import os

    for name in list(os.environ):
        if name.startswith("DRTRAIN_"):
            monkeypatch.delenv(name)
    for name, value in {**PRODUCTION_ENV, **overrides}.items():
        if value is not None:
            monkeypatch.setenv(name, value)


@pytest.mark.parametrize("missing", ["DRTRAIN_DATABASE_URL", "DRTRAIN_BROKER_URL",
                                     "DRTRAIN_STORAGE_URL"])
def test_production_refuses_to_start_without_each_url(monkeypatch, missing) -> None:  # noqa: ANN001
    _production_env(monkeypatch, **{missing: None})
    settings = Settings()
    with pytest.raises(ValueError, match=missing):
        settings.check_production()
    with pytest.raises(ValueError, match=missing):
        create_app(settings)  # before any engine or store is made


def test_production_refuses_half_an_s3_credential(monkeypatch) -> None:  # noqa: ANN001
    _production_env(monkeypatch, DRTRAIN_S3_ACCESS_KEY_ID="AKIDEXAMPLE")
    with pytest.raises(ValueError, match="DRTRAIN_S3_SECRET_ACCESS_KEY"):
        Settings().check_production()
    _production_env(monkeypatch, DRTRAIN_S3_SECRET_ACCESS_KEY=S3_SECRET)
    with pytest.raises(ValueError, match="DRTRAIN_S3_ACCESS_KEY_ID") as info:
        Settings().check_production()
    assert S3_SECRET not in str(info.value)


def test_complete_production_settings_pass(monkeypatch) -> None:  # noqa: ANN001
    _production_env(monkeypatch, DRTRAIN_S3_ACCESS_KEY_ID="AKIDEXAMPLE",
                    DRTRAIN_S3_SECRET_ACCESS_KEY=S3_SECRET)
    Settings().check_production()
    _production_env(monkeypatch)  # no keys at all: ambient credentials (an IAM role)
    Settings().check_production()


def test_cli_refuses_production_without_a_database(monkeypatch) -> None:  # noqa: ANN001
    from drtrain_cli.main import app as cli

    _production_env(monkeypatch, DRTRAIN_DATABASE_URL=None)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["keys", "create", "--tenant", "x"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "DRTRAIN_DATABASE_URL" in result.output


# ---------------------------------------------------------------- caps on active jobs
@pytest.fixture
def capped(app, monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setattr("drtrain.kit.broker.publish_run_job", lambda _s, _j: None)
    monkeypatch.setattr("drtrain.kit.broker.publish_run_jobs", lambda _s, _j, **_: None)
    app.state.settings = app.state.settings.model_copy(update={
        "max_concurrent_jobs_per_tenant": 3, "max_queued_jobs_per_tenant": 1,
        "max_sweep_jobs_per_tenant": 5})
    return app.state.settings


def _active(db, owner: str) -> int:  # noqa: ANN001
    db.expire_all()
    return len(db.scalars(select(Job).where(
        Job.tenant_id == owner, Job.status.in_(["queued", "running", "cancelling"]))).all())


def _sweep(client, auth, ds_id: str, n: int):  # noqa: ANN001, ANN202
    return client.post("/v1/sweeps", json={"base": small_spec(ds_id),
                                           "grid": {"seed": list(range(n))}}, headers=auth)


def test_sweeps_respect_their_own_cap_and_single_jobs_theirs(client, db, auth_a, auth_b,
                                                             capped) -> None:  # noqa: ANN001
    owner = tenant_id(db)
    ds = add_dataset(db, owner)
    first = _sweep(client, auth_a, ds.id, 4)  # 3 running, 1 waiting: the queue is full
    assert first.status_code == 202, first.text
    assert _active(db, owner) == 4

    single = client.post("/v1/jobs", json=small_spec(ds.id), headers=auth_a)
    assert single.status_code == 429 and int(single.headers["retry-after"]) > 0

    over = _sweep(client, auth_a, ds.id, 2)  # 4 + 2 > 5
    assert over.status_code == 429, over.text
    assert over.headers["content-type"].startswith("application/problem+json")
    assert int(over.headers["retry-after"]) > 0 and "5" in over.json()["detail"]
    never = _sweep(client, auth_a, ds.id, 6)  # more than the cap on its own
    assert never.status_code == 422 and "grid" in never.json()["detail"]
    assert _active(db, owner) == 4
    assert len(db.scalars(select(Sweep).where(Sweep.tenant_id == owner)).all()) == 1

    assert _sweep(client, auth_a, ds.id, 1).status_code == 202  # exactly at the cap
    assert _active(db, owner) == 5

    # Another tenant is not affected by A's load.
    ds_b = add_dataset(db, tenant_id(db, "tenant-b"))
    assert _sweep(client, auth_b, ds_b.id, 5).status_code == 202

    # Finished (here: cancelled) children free their places.
    children = db.scalars(select(Job).where(Job.tenant_id == owner)).all()
    for job in children[:3]:
        assert client.post(f"/v1/jobs/{job.id}/cancel", headers=auth_a).status_code == 202
    assert db.get(Job, children[0].id).status == JobStatus.cancelled
    assert client.post("/v1/jobs", json=small_spec(ds.id), headers=auth_a).status_code == 202
