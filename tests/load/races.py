"""The limits' races as measurements against a real API process (``tests.load.server``):
what the tests in test_limit_races.py assert, and what ``python -m scripts.limit_races``
prints (the red-team figures, for any server tree)."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import httpx
from sqlalchemy import func, select

from drtrain.kit.models import Job
from drtrain.tenants import quota
from drtrain.tenants.repository import tenant_by_name
from tests.load.server import SPEC, Api


def tenant_of(server: Api, name: str) -> str:
    with server.factory() as s:
        row = tenant_by_name(s, name)
        assert row is not None
        return row.id


def jobs_of(server: Api, name: str) -> int:
    """Every job the tenant holds, whatever its status."""
    tenant = tenant_of(server, name)
    with server.factory() as s:
        return s.scalar(select(func.count()).select_from(Job).where(Job.tenant_id == tenant)) or 0


def keyed(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Idempotency-Key": uuid.uuid4().hex}


def plain_then_keyed(server: Api, tenant: str, plain: int, keyed_n: int,
                     ) -> tuple[list[int], list[int], int]:
    """``plain`` submits one after another, then ``keyed_n`` keyed ones: their statuses and
    the jobs the tenant holds afterwards."""
    headers = server.new_tenant(tenant)
    url = f"{server.url}/v1/jobs"
    first = [httpx.post(url, json=SPEC, headers=headers).status_code for _ in range(plain)]
    then = [httpx.post(url, json=SPEC, headers=keyed(headers)).status_code
            for _ in range(keyed_n)]
    return first, then, jobs_of(server, tenant)


async def _mixed(url: str, headers: dict[str, str], n: int) -> Counter[int]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=n), timeout=60) as client:
        responses = await asyncio.gather(*(
            client.post(f"{url}/v1/jobs", json=SPEC,
                        headers=keyed(headers) if i % 2 else headers) for i in range(n)))
    return Counter(r.status_code for r in responses)


def mixed_at_once(server: Api, tenant: str, n: int, headers: dict[str, str] | None = None,
                  ) -> tuple[Counter[int], int]:
    """``n`` submits at once, every other one keyed: statuses and jobs held afterwards."""
    headers = headers or server.new_tenant(tenant)
    return asyncio.run(_mixed(server.url, headers, n)), jobs_of(server, tenant)


def csv_bytes(size: int) -> bytes:
    """A valid CSV of exactly ``size`` bytes (at least 30): two features in [0, 1], two
    classes; the last row's first number takes the bytes left over as trailing zeros."""
    lines = ["a,b,label"]
    total, i = len(lines[0]) + 1, 0
    while total + 40 < size:
        lines.append(f"0.{i % 997:03d},0.{(i * 7) % 991:03d},{'xy'[i % 2]}")
        total += len(lines[-1]) + 1
        i += 1
    last = "0.5,0.5,y"
    lines.append("0.5" + "0" * (size - total - len(last) - 1) + last[3:])
    out = ("\n".join(lines) + "\n").encode()
    assert len(out) == size, (len(out), size)
    return out


def _post_file(client: httpx.Client | httpx.AsyncClient, url: str, headers: dict[str, str],
               content: bytes):  # noqa: ANN202
    return client.post(f"{url}/v1/datasets", headers=headers,
                       files={"file": ("data.csv", content, "text/csv")})


def upload_ready(server: Api, headers: dict[str, str], content: bytes) -> str:
    resp = _post_file(httpx.Client(timeout=60), server.url, headers, content)
    assert resp.status_code == 202, resp.text
    dataset = resp.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.url}/v1/datasets/{dataset}", headers=headers).json()["status"]
        if status == "ready":
            return dataset
        assert status == "validating", status
        time.sleep(0.05)
    raise AssertionError("the upload was never checked")


async def _pair(url: str, headers: dict[str, str], dataset: str) -> tuple[int, int, str | None]:
    spec = {**SPEC, "dataset_id": dataset}
    async with httpx.AsyncClient(timeout=60) as client:
        deleted, submitted = await asyncio.gather(
            client.delete(f"{url}/v1/datasets/{dataset}", headers=headers),
            client.post(f"{url}/v1/jobs", json=spec, headers=headers))
    job = submitted.json()["id"] if submitted.status_code == 202 else None
    return deleted.status_code, submitted.status_code, job


def delete_submit_pairs(server: Api, tenant: str, pairs: int,
                        ) -> tuple[int, Counter[tuple[int, int]]]:
    """``pairs`` times: a dataset uploaded, then its DELETE and a submit on it at once (the
    job cancelled after, so the cap never answers). Returns how many pairs both succeeded,
    and the (delete, submit) statuses."""
    headers = server.new_tenant(tenant)
    content = csv_bytes(2_000)
    outcomes: Counter[tuple[int, int]] = Counter()
    both = 0
    for _ in range(pairs):
        dataset = upload_ready(server, headers, content)
        deleted, submitted, job = asyncio.run(_pair(server.url, headers, dataset))
        outcomes[(deleted, submitted)] += 1
        both += deleted == 204 and submitted == 202
        if job is not None:
            httpx.post(f"{server.url}/v1/jobs/{job}/cancel", headers=headers)
            if deleted == 409:
                assert httpx.delete(f"{server.url}/v1/datasets/{dataset}",
                                    headers=headers).status_code == 204
    return both, outcomes


async def _uploads(url: str, headers: dict[str, str], content: bytes, n: int) -> list[int]:
    async with httpx.AsyncClient(timeout=120) as client:
        responses = await asyncio.gather(*(_post_file(client, url, headers, content)
                                           for _ in range(n)))
    return [r.status_code for r in responses]


def concurrent_uploads(server: Api, tenant: str, n: int, size: int) -> tuple[list[int], int]:
    """``n`` uploads of ``size`` bytes at once: their statuses and the bytes the tenant holds
    afterwards (its storage counter)."""
    headers = server.new_tenant(tenant)
    statuses = asyncio.run(_uploads(server.url, headers, csv_bytes(size), n))
    with server.factory() as s:
        return statuses, quota.usage_bytes(s, tenant_of(server, tenant))
