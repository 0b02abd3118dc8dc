"""drtrain_client.Client against an in-process fake of the documented HTTP contract.

``FakeApi`` answers like docs/api.md says the server does (status codes, problem+json, ETag/304,
cursor pages, SSE text, Range/206 downloads with a sha256 ETag). tests/cli/test_cli.py reuses it.
"""
from __future__ import annotations

import email.parser
import hashlib
import itertools
import json
import math
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from drtrain_client import (
    ChecksumMismatch,
    Client,
    ClientError,
    DatasetRejected,
    DrtrainError,
    UnreachableError,
    WaitTimeout,
    parse_sse,
    waiting_for_slot,
)
from drtrain_client import client as client_module

BASE = "http://drtrain.test"
KEY = "drt_test-key"


def problem(status: int, title: str, detail: str,
            errors: list[dict[str, Any]] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": detail}
    if errors:
        body["errors"] = errors
    return httpx.Response(status, content=json.dumps(body).encode(),
                          headers={"content-type": "application/problem+json"})


def parse_multipart(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    """{field: (filename or None, bytes)} from a multipart/form-data request."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser().parsebytes(head + request.content)
    return {part.get_param("name", header="content-disposition"):
            (part.get_filename(), part.get_payload(decode=True))
            for part in message.get_payload()}


class FakeApi:
    """Just enough of the drtrain server, held in memory, to exercise the client for real."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.datasets: dict[str, dict[str, Any]] = {
            "builtin:digits": {"id": "builtin:digits", "name": "digits", "format": "csv",
                               "n_samples": 1797, "n_features": 64, "n_classes": 10}}
        self.busy_datasets: set[str] = set()
        self.checking: dict[str, int] = {}  # dataset id -> GETs that still see it validating
        self.uploads: list[dict[str, tuple[str | None, bytes]]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.script: dict[str, list[dict[str, Any]]] = {}  # job id -> changes, one per GET
        self.points: dict[str, list[dict[str, Any]]] = {}
        self.log_lines: dict[str, dict[int, list[str]]] = {}  # job id -> attempt -> lines
        self.log_script: dict[str, list[dict[int, list[str]]]] = {}  # lines added, one per GET
        self.events_broken = False
        self.idempotency: dict[str, tuple[str, str]] = {}
        self.model = bytes(range(256)) * 40 + b"tail"
        self.model_etag = f'"{hashlib.sha256(self.model).hexdigest()}"'
        self.honour_range = True
        self.model_bytes_served = 0
        self.checkpoint_files = {"c1": self.model, "c2": b"layer weights" * 100}
        self.checkpoint_etags: dict[str, str] = {}
        self.sweeps: dict[str, dict[str, Any]] = {}
        self.predicted: list[list[list[float]]] = []
        self._ids = itertools.count(1)
        self.routes: list[tuple[str, str, Callable[..., httpx.Response]]] = [
            ("POST", r"/v1/datasets", self.upload),
            ("GET", r"/v1/datasets", lambda r: self.page(r, list(self.datasets.values()))),
            ("GET", r"/v1/datasets/(?P<id>[^/]+)", self.get_dataset),
            ("DELETE", r"/v1/datasets/(?P<id>[^/]+)", self.delete_dataset),
            ("POST", r"/v1/jobs", self.submit),
            ("GET", r"/v1/jobs", self.list_jobs),
            ("GET", r"/v1/jobs/(?P<id>[^/]+)", self.get_job),
            ("POST", r"/v1/jobs/(?P<id>[^/]+)/cancel", self.cancel),
            ("DELETE", r"/v1/jobs/(?P<id>[^/]+)", self.delete_job),
            ("GET", r"/v1/jobs/(?P<id>[^/]+)/metrics", self.metrics),
            ("GET", r"/v1/jobs/(?P<id>[^/]+)/logs", self.logs),
            ("GET", r"/v1/jobs/(?P<id>[^/]+)/events", self.events),
            ("GET", r"/v1/jobs/(?P<id>[^/]+)/checkpoints", self.list_checkpoints),
            ("GET", r"/v1/jobs/(?P<id>[^/]+)/checkpoints/(?P<ckpt>[^/]+)",
             self.download_checkpoint),
            ("GET", r"/v1/jobs/(?P<id>[^/]+)/model", self.download),
            ("POST", r"/v1/jobs/(?P<id>[^/]+)/predict", self.predict),
            ("POST", r"/v1/sweeps", self.create_sweep),
            ("GET", r"/v1/sweeps", lambda r: self.page(r, list(reversed(self.sweeps.values())))),
            ("GET", r"/v1/sweeps/(?P<id>[^/]+)", lambda r, id: httpx.Response(
                200, json=self.sweeps[id])),
            ("DELETE", r"/v1/sweeps/(?P<id>[^/]+)", self.delete_sweep),
            ("POST", r"/v1/sweeps/(?P<id>[^/]+)/cancel", self.cancel_sweep),
            ("GET", r"/v1/queue", self.queue),
        ]
        self.running_limit, self.queued_limit = 2, 5

    # ---- wiring
    def client(self, **kwargs: Any) -> Client:
        return Client(BASE, KEY, transport=httpx.MockTransport(self.handle), **kwargs)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return problem(401, "Unauthorized", "missing or unknown API key")
        for method, pattern, handler in self.routes:
            match = re.fullmatch(pattern, request.url.path)
            if match and method == request.method:
                try:
                    return handler(request, **match.groupdict())
                except KeyError:
                    return problem(404, "Not found", f"no such resource {request.url.path}")
        return problem(404, "Not found", f"no route {request.method} {request.url.path}")

    def calls(self, method: str, path_regex: str) -> list[httpx.Request]:
        return [r for r in self.requests
                if r.method == method and re.fullmatch(path_regex, r.url.path)]

    def add_job(self, status: str = "queued", job_id: str | None = None,
                **fields: Any) -> dict[str, Any]:
        job_id = job_id or f"job{next(self._ids)}"
        self.jobs[job_id] = {"id": job_id, "status": status, "status_reason": None,
                             "phase": None, "layer": None, "epoch": None, "progress": 0.0,
                             "attempt": 1, "spec": {}, "dataset_id": "builtin:digits",
                             "result": None, **fields}
        self.points[job_id] = []
        return self.jobs[job_id]

    def add_points(self, job_id: str, n: int, name: str = "train_loss") -> None:
        start = len(self.points[job_id])
        self.points[job_id] += [{"seq": start + i + 1, "phase": "finetune", "layer": None,
                                 "epoch": start + i, "name": name, "value": 1.0 / (start + i + 1),
                                 "at": "2025-01-01T00:00:00Z"} for i in range(n)]

    # ---- datasets
    def upload(self, request: httpx.Request) -> httpx.Response:
        fields = parse_multipart(request)
        self.uploads.append(fields)
        content = fields["file"][1]
        if b"nan" in content:
            return problem(422, "Unprocessable content", "row 2, column x1: NaN is not allowed")
        dataset_id = f"ds{next(self._ids)}"
        accepted = {"id": dataset_id, "name": fields["name"][1].decode(), "format": "csv",
                    "status": "validating", "status_reason": None, "n_samples": None,
                    "n_features": None, "n_classes": None, "visible_units_hint": None,
                    "sha256": hashlib.sha256(content).hexdigest(), "size_bytes": len(content)}
        if b"one class" in content:  # refused by the check that follows the 202
            self.datasets[dataset_id] = {**accepted, "status": "failed",
                                         "status_reason": "the labels hold one class only ('a')"}
        else:
            self.datasets[dataset_id] = {
                **accepted, "status": "ready", "n_samples": content.count(b"\n") - 1,
                "n_features": 2, "n_classes": 2, "visible_units_hint": "gaussian"}
        self.checking[dataset_id] = 2
        return httpx.Response(202, json=accepted,
                              headers={"Location": f"/v1/datasets/{dataset_id}"})

    def get_dataset(self, request: httpx.Request, id: str) -> httpx.Response:
        if self.checking.get(id):
            self.checking[id] -= 1
            return httpx.Response(200, json={**self.datasets[id], "status": "validating",
                                             "status_reason": None, "n_samples": None})
        return httpx.Response(200, json=self.datasets[id])

    def delete_dataset(self, request: httpx.Request, id: str) -> httpx.Response:
        if id in self.busy_datasets:
            return problem(409, "Conflict", f"dataset {id} is used by an active job")
        del self.datasets[id]
        return httpx.Response(204)

    # ---- jobs
    def submit(self, request: httpx.Request) -> httpx.Response:
        spec = json.loads(request.content)
        if "dataset_id" not in spec:
            return problem(422, "Unprocessable content", "invalid job spec",
                           [{"loc": ["body", "dataset_id"], "msg": "Field required"}])
        body_hash = hashlib.sha256(request.content).hexdigest()
        key = request.headers.get("idempotency-key")
        if key and key in self.idempotency:
            job_id, seen_hash = self.idempotency[key]
            if seen_hash != body_hash:
                return problem(422, "Unprocessable content",
                               "Idempotency-Key reused with a different body")
            return httpx.Response(200, json=self.jobs[job_id])
        job = self.add_job(spec=spec, dataset_id=spec["dataset_id"])
        if key:
            self.idempotency[key] = (job["id"], body_hash)
        return httpx.Response(202, json=job, headers={"location": f"/v1/jobs/{job['id']}"})

    def page(self, request: httpx.Request, items: list[dict[str, Any]]) -> httpx.Response:
        """The list envelope every list answers, cut by ``page_size`` / ``page_token``."""
        size = int(request.url.params.get("page_size", 50))
        start = int(request.url.params.get("page_token", 0))
        end = start + size
        return httpx.Response(200, json={"items": items[start:end],
                                         "next_page_token": str(end) if end < len(items) else None})

    def delete_job(self, request: httpx.Request, id: str) -> httpx.Response:
        if self.jobs[id]["status"] in ("queued", "running", "cancelling"):
            return problem(409, "Conflict", f"job {id} is {self.jobs[id]['status']}")
        del self.jobs[id]
        return httpx.Response(204)

    def cancel_sweep(self, request: httpx.Request, id: str) -> httpx.Response:
        sweep, moved = self.sweeps[id], 0
        for child in sweep["children"]:
            job = self.jobs[child["job_id"]]
            if job["status"] in ("queued", "running"):
                job["status"] = "cancelled" if job["status"] == "queued" else "cancelling"
                moved += 1
            child["status"] = job["status"]
        return httpx.Response(202 if moved else 200, json=sweep)

    def delete_sweep(self, request: httpx.Request, id: str) -> httpx.Response:
        children = [c["job_id"] for c in self.sweeps[id]["children"]]
        active = [j for j in children if self.jobs[j]["status"] in ("queued", "running",
                                                                    "cancelling")]
        if active:
            return problem(409, "Conflict", f"sweep {id} has active job(s): {', '.join(active)}")
        for job_id in children:
            del self.jobs[job_id]
        del self.sweeps[id]
        return httpx.Response(204)

    def list_jobs(self, request: httpx.Request) -> httpx.Response:
        status = request.url.params.get("status")
        tag = request.url.params.get("tag")
        return self.page(request, [j for j in reversed(self.jobs.values())
                                   if (not status or j["status"] == status)
                                   and (not tag or tag in j.get("tags", []))])

    def _etag(self, job: dict[str, Any]) -> str:
        digest = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()
        return f'W/"{digest[:16]}"'

    def get_job(self, request: httpx.Request, id: str) -> httpx.Response:
        job = self.jobs[id]
        if self.log_script.get(id):  # the lines logged by the time the job is read
            for attempt, lines in self.log_script[id].pop(0).items():
                self.log_lines.setdefault(id, {}).setdefault(attempt, []).extend(lines)
        if self.script.get(id):
            job.update(self.script[id].pop(0))
        etag = self._etag(job)
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers={"etag": etag})
        return httpx.Response(200, json=job, headers={"etag": etag})

    def cancel(self, request: httpx.Request, id: str) -> httpx.Response:
        job = self.jobs[id]
        if job["status"] == "cancelled":
            return httpx.Response(200, json=job)  # a repeated cancel is idempotent
        if job["status"] in ("succeeded", "failed"):
            return problem(409, "Conflict", f"job {id} is already {job['status']}")
        job["status"] = "cancelled" if job["status"] == "queued" else "cancelling"
        return httpx.Response(202, json=job)

    def metrics(self, request: httpx.Request, id: str) -> httpx.Response:
        since = int(request.url.params.get("since", 0))
        limit = int(request.url.params.get("limit", 1000))
        points = [p for p in self.points[id] if p["seq"] > since][:limit]
        return httpx.Response(200, json={"items": points,
                                         "next_since": points[-1]["seq"] if points else since})

    def logs(self, request: httpx.Request, id: str) -> httpx.Response:
        attempt = int(request.url.params.get("attempt", self.jobs[id]["attempt"]))
        since = int(request.url.params.get("since", 0))
        lines = self.log_lines.get(id, {}).get(attempt, [])[since:]
        return httpx.Response(200, text="".join(f"{line}\n" for line in lines),
                              headers={"content-type": "text/plain; charset=utf-8"})

    def events(self, request: httpx.Request, id: str) -> httpx.Response:
        if self.events_broken:
            return problem(404, "Not found", "no route")
        job = self.jobs[id]
        last = int(request.headers.get("last-event-id", 0))
        chunks = [f"event: status\ndata: {json.dumps({**job, 'status': 'running'})}\n\n",
                  ": keep-alive\n\n"]
        for p in self.points[id]:
            if p["seq"] > last:
                chunks.append(f"event: metric\nid: {p['seq']}\ndata: {json.dumps(p)}\n\n")
        for change in self.script.pop(id, []):
            job.update(change)
        chunks.append(f"event: status\ndata: {json.dumps(job)}\n\n")
        return httpx.Response(200, content="".join(chunks).encode(),
                              headers={"content-type": "text/event-stream"})

    def list_checkpoints(self, request: httpx.Request, id: str) -> httpx.Response:
        if id not in self.jobs:
            return problem(404, "Not found", f"no job {id}")
        return self.page(request, [
            {"id": ckpt, "kind": "final" if ckpt == "c1" else "layer", "phase": "pretrain",
             "layer": None if ckpt == "c1" else 0, "epoch": 2, "attempt": 1,
             "sha256": hashlib.sha256(body).hexdigest(), "size_bytes": len(body),
             "created_at": "2025-01-01T00:00:00Z"}
            for ckpt, body in self.checkpoint_files.items()])

    def download_checkpoint(self, request: httpx.Request, id: str, ckpt: str) -> httpx.Response:
        if id not in self.jobs:
            return problem(404, "Not found", f"no job {id}")
        body = self.checkpoint_files[ckpt]
        etag = self.checkpoint_etags.get(ckpt, hashlib.sha256(body).hexdigest())
        return httpx.Response(200, content=body, headers={
            "etag": f'"{etag}"', "content-type": "application/octet-stream"})

    def download(self, request: httpx.Request, id: str) -> httpx.Response:
        headers = {"etag": self.model_etag, "accept-ranges": "bytes",
                   "content-type": "application/octet-stream"}
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("range", ""))
        if match and self.honour_range:
            start = int(match.group(1))
            if start >= len(self.model):
                return problem(416, "Range not satisfiable", f"model has {len(self.model)} bytes")
            body = self.model[start:]
            headers["content-range"] = f"bytes {start}-{len(self.model) - 1}/{len(self.model)}"
            self.model_bytes_served += len(body)
            return httpx.Response(206, content=body, headers=headers)
        self.model_bytes_served += len(self.model)
        return httpx.Response(200, content=self.model, headers=headers)

    def predict(self, request: httpx.Request, id: str) -> httpx.Response:
        inputs = json.loads(request.content)["inputs"]
        if any(len(row) != 3 for row in inputs):
            return problem(422, "Unprocessable content", "each input row needs 3 features")
        self.predicted.append(inputs)
        return httpx.Response(200, json={
            "predictions": ["pos" if sum(r) >= 0 else "neg" for r in inputs],
            "probabilities": [[0.8, 0.2] if sum(r) >= 0 else [0.3, 0.7] for r in inputs]})

    # ---- the tenant's queue: jobs queued with ``dispatched_at`` None wait, in the order added
    def queue(self, request: httpx.Request) -> httpx.Response:
        jobs = list(self.jobs.values())
        waiting = [j["id"] for j in jobs if j["status"] == "queued"
                   and "dispatched_at" in j and j["dispatched_at"] is None]
        dispatched = [j for j in jobs if j["status"] in ("queued", "running", "cancelling")
                      and j.get("dispatched_at")]
        limit = int(request.url.params.get("limit", 50))
        job_id = request.url.params.get("job_id")
        return httpx.Response(200, json={
            "running_limit": self.running_limit, "queued_limit": self.queued_limit,
            "dispatched": len(dispatched), "waiting": len(waiting),
            "items": [{"position": n, "job_id": i}
                      for n, i in enumerate(waiting[:limit], start=1)],
            "position": waiting.index(job_id) + 1 if job_id in waiting else None})

    # ---- sweeps
    def create_sweep(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        names = sorted(body["grid"])
        children = []
        for values in itertools.product(*(body["grid"][n] for n in names)):
            point = dict(zip(names, values, strict=True))
            job = self.add_job(spec=body["base"])
            children.append({"job_id": job["id"], "grid_point": point, "status": "queued",
                             "result": None})
        sweep_id = f"sw{next(self._ids)}"
        self.sweeps[sweep_id] = {"id": sweep_id, "base": body["base"], "grid": body["grid"],
                                 "children": children,
                                 "summary": [{"point": {"pretrain.dr.weight": 0.1}, "n": 2,
                                              "n_done": 2,
                                              "metrics": {"test_accuracy": {"mean": 0.9,
                                                                            "std": 0.01}}}]}
        return httpx.Response(202, json=self.sweeps[sweep_id])


@pytest.fixture
def fake() -> FakeApi:
    return FakeApi()


@pytest.fixture
def client(fake: FakeApi) -> Iterator[Client]:
    with fake.client() as c:
        yield c


def closed_port_url() -> str:
    """A URL nothing listens on: bind a port, then free it, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---- datasets ------------------------------------------------------------------------------

def test_upload_sends_the_form_fields_and_file(fake: FakeApi, client: Client,
                                               tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    data.write_bytes(b"x1,x2,label,group\n0.1,0.2,a,g1\n0.3,0.4,b,g2\n")
    labels = tmp_path / "labels.idx1-ubyte.gz"
    labels.write_bytes(b"\x1f\x8bfake")
    ds = client.upload_dataset(data, name="mine", side_info_column="group", labels_file=labels)
    sent = fake.uploads[-1]
    assert sent["file"] == ("train.csv", data.read_bytes())
    assert sent["labels_file"] == ("labels.idx1-ubyte.gz", b"\x1f\x8bfake")
    assert sent["name"][1] == b"mine"
    assert sent["label_column"][1] == b"label"
    assert sent["side_info_column"][1] == b"group"
    assert ds["n_samples"] == 2 and ds["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert client.get_dataset(ds["id"])["name"] == "mine"


def test_upload_waits_for_the_check_by_default(fake: FakeApi, client: Client,
                                               tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_bytes(b"x1,x2,label\n1,2,a\n3,4,b\n")
    ds = client.upload_dataset(data)
    assert ds["status"] == "ready" and ds["n_samples"] == 2
    # Two polls still saw it validating, the third its outcome.
    assert len(fake.calls("GET", rf"/v1/datasets/{ds['id']}")) == 3


def test_upload_without_waiting_returns_the_202_body(fake: FakeApi, client: Client,
                                                     tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_bytes(b"x1,x2,label\n1,2,a\n3,4,b\n")
    ds = client.upload_dataset(data, wait=False)
    assert ds["status"] == "validating" and ds["n_samples"] is None
    assert fake.calls("GET", r"/v1/datasets/.*") == []
    assert client.wait_dataset(ds["id"])["status"] == "ready"


def test_upload_whose_check_fails_raises_its_reason_as_a_422(client: Client,
                                                             tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_bytes(b"x1,x2,label\n1,2,a\n3,4,a\n# one class\n")
    with pytest.raises(DatasetRejected) as info:
        client.upload_dataset(data)
    assert isinstance(info.value, DrtrainError) and info.value.status == 422
    assert str(info.value) == "422 Unprocessable content: the labels hold one class only ('a')"
    assert info.value.dataset["status"] == "failed"


def test_waiting_for_a_check_gives_up_after_its_timeout(fake: FakeApi, client: Client,
                                                        tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_bytes(b"x1,x2,label\n1,2,a\n3,4,b\n")
    ds = client.upload_dataset(data, wait=False)
    fake.checking[ds["id"]] = 10**6
    with pytest.raises(WaitTimeout, match=f"dataset {ds['id']} still validating"):
        client.wait_dataset(ds["id"], timeout=0.3, poll=0.05)


def test_upload_defaults_name_and_omits_side_info(fake: FakeApi, client: Client,
                                                  tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_bytes(b"x,label\n1,a\n")
    client.upload_dataset(data, label_column="y")
    sent = fake.uploads[-1]
    assert sent["name"][1] == b"d.csv" and sent["label_column"][1] == b"y"
    assert "side_info_column" not in sent and "labels_file" not in sent


def test_upload_streams_the_file_in_chunks(tmp_path: Path) -> None:
    data = tmp_path / "big.csv"
    payload = b"x,label\n" + b"0.5,a\n" * 100_000  # 600 kB
    data.write_bytes(payload)
    seen: dict[str, Any] = {}

    class ChunkCounter(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            chunks = list(request.stream)  # what would go on the wire, in order
            seen["sizes"] = [len(c) for c in chunks]
            seen["body"] = b"".join(chunks)
            return httpx.Response(201, json={"id": "ds1"})

    with Client(BASE, KEY, transport=ChunkCounter()) as c:
        c.upload_dataset(data)
    assert payload in seen["body"]
    # Read whole, the file would arrive as one chunk at least as large as the file.
    assert max(seen["sizes"]) < len(payload) // 4
    assert len(seen["sizes"]) > 4


def test_malformed_upload_raises_problem_detail(client: Client, tmp_path: Path) -> None:
    data = tmp_path / "bad.csv"
    data.write_bytes(b"x1,label\nnan,a\n")
    with pytest.raises(DrtrainError) as info:
        client.upload_dataset(data)
    assert info.value.status == 422
    assert info.value.detail == "row 2, column x1: NaN is not allowed"
    assert str(info.value) == "422 Unprocessable content: row 2, column x1: NaN is not allowed"


def test_list_and_delete_datasets(fake: FakeApi, client: Client) -> None:
    fake.datasets["ds9"] = {"id": "ds9", "name": "nine"}
    assert [d["id"] for d in client.list_datasets()] == ["builtin:digits", "ds9"]
    client.delete_dataset("ds9")
    assert "ds9" not in fake.datasets
    with pytest.raises(DrtrainError) as info:
        client.get_dataset("ds9")
    assert info.value.status == 404


def test_delete_of_a_dataset_in_use_is_a_conflict(fake: FakeApi, client: Client) -> None:
    fake.busy_datasets.add("builtin:digits")
    with pytest.raises(DrtrainError) as info:
        client.delete_dataset("builtin:digits")
    assert info.value.status == 409 and "active job" in str(info.value)


def test_wrong_key_is_unauthorized(fake: FakeApi) -> None:
    with Client(BASE, "drt_wrong", transport=httpx.MockTransport(fake.handle)) as c:
        with pytest.raises(DrtrainError) as info:
            c.list_datasets()
    assert info.value.status == 401 and info.value.title == "Unauthorized"


def test_error_without_problem_body_is_still_readable() -> None:
    def gateway(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, content=b"<html>Bad Gateway</html>",
                              headers={"content-type": "text/html"})

    with Client(BASE, KEY, transport=httpx.MockTransport(gateway)) as c:
        with pytest.raises(DrtrainError) as info:
            c.get_job("j1")
    assert info.value.status == 502
    assert str(info.value) == "502 Bad Gateway: <html>Bad Gateway</html>"


def test_ids_cannot_escape_their_path_segment(fake: FakeApi, client: Client) -> None:
    with pytest.raises(DrtrainError):
        client.get_dataset("../jobs")
    assert fake.requests[-1].url.raw_path == b"/v1/datasets/..%2Fjobs"


# ---- jobs ----------------------------------------------------------------------------------

def test_submit_reports_validation_errors(client: Client) -> None:
    with pytest.raises(DrtrainError) as info:
        client.submit_job({"seed": 0})
    assert info.value.status == 422
    assert info.value.errors == [{"loc": ["body", "dataset_id"], "msg": "Field required"}]
    assert str(info.value) == ("422 Unprocessable content: invalid job spec\n"
                               "  - body.dataset_id: Field required")


def test_submit_with_idempotency_key_returns_the_original_job(fake: FakeApi,
                                                               client: Client) -> None:
    spec = {"dataset_id": "builtin:digits", "seed": 1}
    first = client.submit_job(spec, idempotency_key="k-1")
    again = client.submit_job(spec, idempotency_key="k-1")
    assert first["id"] == again["id"] and len(fake.jobs) == 1
    assert fake.calls("POST", "/v1/jobs")[0].headers["idempotency-key"] == "k-1"
    with pytest.raises(DrtrainError) as info:
        client.submit_job({**spec, "seed": 2}, idempotency_key="k-1")
    assert info.value.status == 422
    plain = client.submit_job(spec)
    assert plain["id"] != first["id"]
    assert "idempotency-key" not in fake.requests[-1].headers


def test_get_job_with_etag_answers_none_when_unchanged(fake: FakeApi, client: Client) -> None:
    job_id = fake.add_job("running", progress=0.3)["id"]
    job = client.get_job(job_id)
    assert job is not None and job["progress"] == 0.3 and job.etag
    assert client.get_job(job_id, etag=job.etag) is None
    fake.jobs[job_id]["progress"] = 0.6
    fresh = client.get_job(job_id, etag=job.etag)
    assert fresh is not None and fresh["progress"] == 0.6 and fresh.etag != job.etag


def test_list_jobs_follows_every_page(fake: FakeApi, client: Client) -> None:
    ids = [fake.add_job()["id"] for _ in range(7)]
    listed = [j["id"] for j in client.list_jobs(page_size=3)]
    assert listed == list(reversed(ids))
    assert len(fake.calls("GET", "/v1/jobs")) == 3


def test_list_jobs_filters_by_status(fake: FakeApi, client: Client) -> None:
    fake.add_job("queued")
    done = fake.add_job("succeeded")["id"]
    assert [j["id"] for j in client.list_jobs(status="succeeded")] == [done]
    assert fake.requests[-1].url.params["status"] == "succeeded"


def test_cancel_and_cancel_of_a_finished_job(fake: FakeApi, client: Client) -> None:
    queued = fake.add_job("queued")["id"]
    running = fake.add_job("running")["id"]
    done = fake.add_job("succeeded")["id"]
    assert client.cancel_job(queued)["status"] == "cancelled"
    assert client.cancel_job(running)["status"] == "cancelling"
    assert client.cancel_job(queued)["status"] == "cancelled"  # again: 200, idempotent
    with pytest.raises(DrtrainError) as info:
        client.cancel_job(done)
    assert info.value.status == 409 and "already succeeded" in str(info.value)


def test_queue_gives_the_counts_the_next_waiting_jobs_and_a_jobs_place(fake: FakeApi,
                                                                      client: Client) -> None:
    fake.add_job("running", dispatched_at="2026-01-01T00:00:00Z")
    fake.add_job("queued", dispatched_at="2026-01-01T00:00:01Z")
    first, second, third = (fake.add_job("queued", dispatched_at=None)["id"] for _ in range(3))
    queue = client.queue(limit=2, job_id=third)
    assert fake.requests[-1].url.params["limit"] == "2"
    assert fake.requests[-1].url.params["job_id"] == third
    assert queue == {"running_limit": 2, "queued_limit": 5, "dispatched": 2, "waiting": 3,
                     "items": [{"position": 1, "job_id": first},
                               {"position": 2, "job_id": second}],
                     "position": 3}
    assert client.queue()["position"] is None
    assert "job_id" not in fake.requests[-1].url.params


def test_waiting_for_slot_needs_a_queued_job_the_server_has_not_dispatched() -> None:
    assert waiting_for_slot({"status": "queued", "dispatched_at": None})
    assert not waiting_for_slot({"status": "queued", "dispatched_at": "2026-01-01T00:00:00Z"})
    assert not waiting_for_slot({"status": "running", "dispatched_at": None})
    assert not waiting_for_slot({"status": "queued"})  # a server from before the queue


def test_metrics_fetches_all_pages_after_since(fake: FakeApi, client: Client) -> None:
    job_id = fake.add_job("running")["id"]
    fake.add_points(job_id, 2345)
    points = client.metrics(job_id)
    assert [p["seq"] for p in points] == list(range(1, 2346))
    assert len(fake.calls("GET", r"/v1/jobs/\w+/metrics")) == 3
    assert [p["seq"] for p in client.metrics(job_id, since=2340)] == [2341, 2342, 2343, 2344, 2345]


def test_events_parse_the_stream_and_resume_after_last_id(fake: FakeApi, client: Client) -> None:
    job_id = fake.add_job("queued")["id"]
    fake.add_points(job_id, 3)
    fake.script[job_id] = [{"status": "succeeded", "progress": 1.0}]
    events = list(client.events(job_id))
    assert [(e, d.get("seq"), i) for e, d, i in events] == [
        ("status", None, None), ("metric", 1, "1"), ("metric", 2, "2"), ("metric", 3, "3"),
        ("status", None, "3")]
    assert events[-1][1]["status"] == "succeeded"
    resumed = list(client.events(job_id, last_event_id=2))
    assert fake.calls("GET", r"/v1/jobs/\w+/events")[-1].headers["last-event-id"] == "2"
    assert [d["seq"] for e, d, _ in resumed if e == "metric"] == [3]


def test_events_error_status_raises_problem(fake: FakeApi, client: Client) -> None:
    with pytest.raises(DrtrainError) as info:
        list(client.events("nope"))
    assert info.value.status == 404


def test_parse_sse_follows_the_whatwg_rules() -> None:
    lines = [": hello", "retry: 1000", "data: {\"a\":", "data: 1}", "", "event: status",
             "id: 7", "data:{\"b\": 2}", "", "event: lonely", "", "data: [1, 2]", ""]
    assert list(parse_sse(iter(lines), last_id="5")) == [
        ("message", {"a": 1}, "5"), ("status", {"b": 2}, "7"), ("message", [1, 2], "7")]


def test_parse_sse_rejects_data_that_is_not_json() -> None:
    with pytest.raises(ClientError, match="malformed event"):
        list(parse_sse(iter(["event: metric", "data: {oops", ""])))


def test_wait_polls_until_terminal_using_etags(fake: FakeApi, client: Client) -> None:
    job_id = fake.add_job("queued")["id"]
    fake.script[job_id] = [{}, {"status": "running"}, {}, {}, {"status": "succeeded",
                                                             "result": {"test_accuracy": 0.9}}]
    final = client.wait(job_id, poll=0)
    assert final["status"] == "succeeded" and final["result"] == {"test_accuracy": 0.9}
    gets = fake.calls("GET", rf"/v1/jobs/{job_id}")
    assert len(gets) == 5
    assert all("if-none-match" in r.headers for r in gets[1:])


def test_wait_times_out(fake: FakeApi, client: Client) -> None:
    job_id = fake.add_job("running")["id"]
    with pytest.raises(WaitTimeout) as info:
        client.wait(job_id, timeout=0.05, poll=0.01)
    assert info.value.status == "running" and job_id in str(info.value)


def test_checkpoints_and_predict(fake: FakeApi, client: Client) -> None:
    job_id = fake.add_job("succeeded")["id"]
    assert client.checkpoints(job_id)[0]["kind"] == "final"
    answer = client.predict(job_id, np.array([[1.0, 2.0, 3.0], [-1.0, -2.0, 0.5]]))
    assert fake.predicted[-1] == [[1.0, 2.0, 3.0], [-1.0, -2.0, 0.5]]
    assert answer["predictions"] == ["pos", "neg"]
    with pytest.raises(DrtrainError, match="3 features"):
        client.predict(job_id, [[1.0]])


def test_sweeps(fake: FakeApi, client: Client) -> None:
    grid = {"pretrain.dr.weight": [0, 0.1], "seed": [0, 1]}
    sweep = client.create_sweep({"dataset_id": "builtin:digits"}, grid)
    assert len(sweep["children"]) == 4
    assert json.loads(fake.requests[-1].content) == {"base": {"dataset_id": "builtin:digits"},
                                                     "grid": grid}
    assert client.get_sweep(sweep["id"])["summary"][0]["n_done"] == 2


# ---- model download ----------------------------------------------------------------------

def test_download_writes_the_verified_model(fake: FakeApi, client: Client,
                                            tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    out = tmp_path / "model.safetensors"
    info = client.download_model(job_id, out)
    assert out.read_bytes() == fake.model
    assert info == {"path": str(out), "sha256": hashlib.sha256(fake.model).hexdigest(),
                    "size_bytes": len(fake.model), "resumed_from": 0}
    assert not (tmp_path / "model.safetensors.part").exists()
    assert "range" not in fake.requests[-1].headers


def test_download_resumes_a_partial_file_with_range(fake: FakeApi, client: Client,
                                                     tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    out = tmp_path / "model.safetensors"
    (tmp_path / "model.safetensors.part").write_bytes(fake.model[:4000])
    info = client.download_model(job_id, out)
    assert fake.requests[-1].headers["range"] == "bytes=4000-"
    assert fake.model_bytes_served == len(fake.model) - 4000
    assert out.read_bytes() == fake.model and info["resumed_from"] == 4000
    assert not (tmp_path / "model.safetensors.part").exists()


def test_download_sha256_mismatch_keeps_nothing(fake: FakeApi, client: Client,
                                                tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    fake.model_etag = f'"{hashlib.sha256(b"another model").hexdigest()}"'
    out = tmp_path / "model.safetensors"
    with pytest.raises(ChecksumMismatch) as info:
        client.download_model(job_id, out)
    assert info.value.actual == hashlib.sha256(fake.model).hexdigest()
    assert info.value.expected == hashlib.sha256(b"another model").hexdigest()
    assert not out.exists() and not (tmp_path / "model.safetensors.part").exists()


def test_download_with_a_corrupt_partial_file_fails_then_recovers(fake: FakeApi, client: Client,
                                                                   tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    out = tmp_path / "model.safetensors"
    (tmp_path / "model.safetensors.part").write_bytes(b"\xff" * 100)
    with pytest.raises(ChecksumMismatch):
        client.download_model(job_id, out)
    assert not out.exists()
    client.download_model(job_id, out)
    assert out.read_bytes() == fake.model


def test_download_when_the_server_ignores_range(fake: FakeApi, client: Client,
                                                tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    fake.honour_range = False
    out = tmp_path / "m.safetensors"
    (tmp_path / "m.safetensors.part").write_bytes(fake.model[:50])
    info = client.download_model(job_id, out)
    assert out.read_bytes() == fake.model and info["resumed_from"] == 0


def test_download_restarts_when_the_partial_file_is_too_long(fake: FakeApi, client: Client,
                                                             tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    out = tmp_path / "m.safetensors"
    (tmp_path / "m.safetensors.part").write_bytes(fake.model + b"junk")
    client.download_model(job_id, out)
    assert out.read_bytes() == fake.model
    downloads = fake.calls("GET", r"/v1/jobs/\w+/model")
    assert [r.headers.get("range") for r in downloads] == [f"bytes={len(fake.model) + 4}-", None]


def test_download_without_resume_ignores_the_partial_file(fake: FakeApi, client: Client,
                                                          tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    out = tmp_path / "m.safetensors"
    (tmp_path / "m.safetensors.part").write_bytes(b"\xff" * 100)
    client.download_model(job_id, out, resume=False)
    assert out.read_bytes() == fake.model and "range" not in fake.requests[-1].headers


def test_interrupted_download_can_be_resumed(fake: FakeApi, tmp_path: Path) -> None:
    class Dropping(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield fake.model[:3000]
            raise httpx.ReadError("connection reset")

    first = True

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal first
        if first and request.url.path.endswith("/model"):
            first = False
            return httpx.Response(200, stream=Dropping(), headers={"etag": fake.model_etag})
        return fake.handle(request)

    job_id = fake.add_job("succeeded")["id"]
    out = tmp_path / "m.safetensors"
    with Client(BASE, KEY, transport=httpx.MockTransport(flaky)) as c:
        with pytest.raises(ClientError, match="interrupted after 3000 bytes"):
            c.download_model(job_id, out)
        assert (tmp_path / "m.safetensors.part").stat().st_size == 3000
        info = c.download_model(job_id, out)
    assert info["resumed_from"] == 3000 and out.read_bytes() == fake.model


def test_predict_names_a_value_json_cannot_carry_and_sends_nothing(fake: FakeApi,
                                                                    client: Client) -> None:
    job_id = fake.add_job("succeeded")["id"]
    for inputs, said in [([[1.0, 2.0, 0.0], [3.0, math.nan, 0.0]], "inputs row 1, column 1: nan"),
                         (np.array([[math.inf, 0.0, 0.0]]), "inputs row 0, column 0: inf")]:
        with pytest.raises(ClientError, match=re.escape(f"{said} is not a finite number")):
            client.predict(job_id, inputs)
    assert fake.predicted == []
    assert client.predict(job_id, [[1.0, 2.0, 0.0]])["predictions"] == ["pos"]


def test_predict_sends_more_rows_than_a_request_holds_as_several(fake: FakeApi, client: Client,
                                                                 monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(client_module, "PREDICT_ROWS", 2)  # the API's bound, made small
    job_id = fake.add_job("succeeded")["id"]
    rows = [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [3.0, 0.0, 0.0]]
    answer = client.predict(job_id, rows)
    assert [len(sent) for sent in fake.predicted] == [2, 2, 1]
    assert answer["predictions"] == ["pos", "neg", "pos", "neg", "pos"]
    assert len(answer["probabilities"]) == 5
    fake.predicted.clear()
    with pytest.raises(ClientError, match="inputs row 3, column 0: nan"):  # counted in all rows
        client.predict(job_id, [*rows[:3], [math.nan, 0.0, 0.0]])


def test_unreachable_server_gives_an_actionable_error() -> None:
    url = closed_port_url()
    with Client(url, KEY, timeout=5) as c:
        with pytest.raises(UnreachableError) as info:
            c.list_datasets()
    assert str(info.value) == (f"cannot reach drtrain at {url} (Connection refused): check the "
                               "URL (as given) and that the API is running there")
    assert "--url" not in str(info.value)  # a CLI flag means nothing to a Python caller
    assert "(the default: none was given, in DRTRAIN_URL or in a data folder)" in str(
        UnreachableError("http://127.0.0.1:8000", None, "default"))


def test_problem_text_lists_only_errors_the_detail_does_not_repeat() -> None:
    err = DrtrainError(422, "Unprocessable content", "a.b: bad",
                       [{"loc": ["a", "b"], "msg": "bad"}, {"loc": ["c", 0], "msg": "worse"}])
    assert str(err) == "422 Unprocessable content: a.b: bad\n  - c.0: worse"


def test_framework_style_detail_list_is_flattened() -> None:
    response = httpx.Response(422, json={"detail": [{"loc": ["query", "since"], "msg": "bad"}]})
    err = DrtrainError.from_response(response)
    assert (err.status, err.title, err.detail) == (422, "Unprocessable Entity", "query.since: bad")


# ---- lists, progress, checkpoints ------------------------------------------------------------

def test_every_list_is_read_from_the_items_envelope_across_pages(fake: FakeApi,
                                                                 client: Client) -> None:
    for i in range(60):
        fake.datasets[f"ds-extra{i}"] = {"id": f"ds-extra{i}", "name": str(i)}
    assert len(client.list_datasets()) == 61
    assert [r.url.params.get("page_token") for r in fake.calls("GET", "/v1/datasets")] == [
        None, "50"]
    sweeps = [client.create_sweep({"dataset_id": "d"}, {"seed": [0]})["id"] for _ in range(3)]
    assert [s["id"] for s in client.list_sweeps(page_size=2)] == sweeps[::-1]


def test_a_list_answer_without_the_envelope_is_an_error() -> None:
    def bare(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[{"id": "x"}])

    with Client(BASE, KEY, transport=httpx.MockTransport(bare)) as c:
        with pytest.raises(ClientError, match=r'expected a list envelope \{"items"'):
            c.list_datasets()


def test_metrics_filters_by_name_and_follows_next_since(fake: FakeApi, client: Client) -> None:
    job_id = fake.add_job("running")["id"]
    fake.add_points(job_id, 1500, name="train_loss")
    fake.add_points(job_id, 2, name="test_accuracy")
    assert [p["seq"] for p in client.metrics(job_id, name="test_accuracy")] == [1501, 1502]
    assert len(client.metrics(job_id, name=["test_accuracy", "train_loss"])) == 1502
    assert [r.url.params["since"] for r in fake.calls("GET", r".*/metrics")][-2:] == ["0", "1000"]


def test_upload_reports_progress_up_to_the_file_sizes(fake: FakeApi, client: Client,
                                                      tmp_path: Path) -> None:
    data = tmp_path / "big.csv"
    data.write_bytes(b"x,label\n" + b"0.5,a\n" * 30_000)
    labels = tmp_path / "labels.gz"
    labels.write_bytes(b"\x1f\x8b" + b"l" * 1000)
    seen: list[tuple[int, int | None]] = []
    client.upload_dataset(data, labels_file=labels, progress=lambda d, t: seen.append((d, t)))
    total = data.stat().st_size + labels.stat().st_size
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 3
    assert fake.uploads[-1]["file"][1] == data.read_bytes()


def test_download_reports_progress_from_the_resumed_byte(fake: FakeApi, client: Client,
                                                         tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    (tmp_path / "m.safetensors.part").write_bytes(fake.model[:1000])
    seen: list[tuple[int, int | None]] = []
    client.download_model(job_id, tmp_path / "m.safetensors",
                          progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (1000, len(fake.model)) and seen[-1] == (len(fake.model), len(fake.model))


def test_checkpoints_are_listed_and_downloaded_verified(fake: FakeApi, client: Client,
                                                        tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    listed = client.checkpoints(job_id)
    assert [c["id"] for c in listed] == ["c1", "c2"]
    out = tmp_path / "layer0.safetensors"
    info = client.download_checkpoint(job_id, "c2", out)
    assert out.read_bytes() == fake.checkpoint_files["c2"]
    assert info["sha256"] == listed[1]["sha256"] and info["size_bytes"] == out.stat().st_size
    assert fake.requests[-1].url.path == f"/v1/jobs/{job_id}/checkpoints/c2"


def test_a_corrupt_checkpoint_download_keeps_nothing(fake: FakeApi, client: Client,
                                                     tmp_path: Path) -> None:
    job_id = fake.add_job("succeeded")["id"]
    fake.checkpoint_etags["c2"] = "0" * 64
    out = tmp_path / "c2.safetensors"
    with pytest.raises(ChecksumMismatch, match="downloaded checkpoint is corrupt"):
        client.download_checkpoint(job_id, "c2", out)
    assert not out.exists() and not (tmp_path / "c2.safetensors.part").exists()
    with pytest.raises(DrtrainError) as info:
        client.download_checkpoint(job_id, "c9", out)
    assert info.value.status == 404
