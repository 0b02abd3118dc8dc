"""(b) Production-like for real: PostgreSQL + Redis on 127.0.0.1, an S3 endpoint (moto server),
the API and a Celery worker as separate processes configured only by environment."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import redis

from tests.e2e.flow import free_port, run_flow, stop, wait_http
from tests.pg import fresh_database

pytestmark = [pytest.mark.e2e]

BIN = Path(sys.executable).parent
REDIS_DB = 11


@pytest.fixture
def pg_database():
    # Not migrated: the test runs `drtrain migrate` as an operator would.
    with fresh_database("e2e", migrate=False) as url:
        yield url


@pytest.fixture
def redis_url():
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    client.ping()  # fails (never skips) without Redis
    client.flushdb()
    yield f"redis://127.0.0.1:6379/{REDIS_DB}"
    client.flushdb()


@pytest.fixture
def s3_endpoint(tmp_path):
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/moto-api/", proc, timeout=60)
    boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket="drtrain-e2e")
    yield url
    stop(proc)
    log.close()


def test_production_like_full_flow(tmp_path, pg_database, redis_url, s3_endpoint) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRTRAIN_")}
    env.update(
        DRTRAIN_ENVIRONMENT="production",
        DRTRAIN_DATABASE_URL=pg_database,
        DRTRAIN_BROKER_URL=redis_url,
        DRTRAIN_STORAGE_URL="s3://drtrain-e2e/objects",
        DRTRAIN_S3_ENDPOINT_URL=s3_endpoint,
        DRTRAIN_S3_ACCESS_KEY_ID="test",
        DRTRAIN_S3_SECRET_ACCESS_KEY="test",
        DRTRAIN_DATA_DIR=str(tmp_path / "scratch"),
    )
    drtrain = str(BIN / "drtrain")
    subprocess.run([drtrain, "migrate"], env=env, check=True, timeout=120)
    out = subprocess.run([drtrain, "keys", "create", "--tenant", "e2e"], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    key = out.strip().splitlines()[-1].split()[-1]
    assert key.startswith("drt_"), out

    port = free_port()
    api_log, worker_log = open(tmp_path / "api.log", "wb"), open(tmp_path / "worker.log", "wb")
    api = subprocess.Popen([drtrain, "api", "--host", "127.0.0.1", "--port", str(port)], env=env,
                           stdout=api_log, stderr=subprocess.STDOUT, start_new_session=True)
    worker = subprocess.Popen([drtrain, "worker"], env=env, stdout=worker_log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/readyz", api)
        run_flow(base, key, tmp_path)
    finally:
        stop(worker)
        stop(api)
        api_log.close()
        worker_log.close()
        print((tmp_path / "worker.log").read_text()[-5000:])
    # The model really lives in S3, not on local disk.
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test",
                      aws_secret_access_key="test", region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="drtrain-e2e").get("Contents", [])]
    assert any(k.endswith("model.safetensors") for k in keys), keys
