"""A small synchronous client for the drtrain HTTP API (OpenAPI at ``/openapi.json``).

It speaks only HTTP (httpx), so scripts and the CLI stay light: no torch, no server imports.
Every failure surfaces as a ``drtrain_client.errors.ClientError`` subclass. Every list comes
in one envelope, ``{"items": [...], "next_page_token": ...}``, followed page by page here.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, overload
from urllib.parse import quote

import httpx

from drtrain_client.backoff import Backoff
from drtrain_client.connection import Connection, resolve_connection
from drtrain_client.errors import (
    ChecksumMismatch,
    ClientError,
    DatasetRejected,
    DrtrainError,
    UnreachableError,
    WaitTimeout,
)
from drtrain_client.transfers import (
    CountingReader,
    Meter,
    ProgressCallback,
    append_chunks,
    content_range_start,
    etag_sha256,
)

# The server's (drtrain/kit/models.py); the client imports nothing of it, so these are copies
# that tests/test_lists.py holds equal.
JOB_STATUSES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
# The most rows one predict request carries (api/schemas/jobs.py MAX_PREDICT_ROWS): larger
# inputs go as several requests.
PREDICT_ROWS = 10_000

# Metrics are fetched in pages of this size; a full page means there may be more.
_METRICS_PAGE = 1000
# The server sends a keep-alive comment every ~15 s, so a longer read timeout means "dead".
_SSE_READ_TIMEOUT = 60.0


def waiting_for_slot(job: Mapping[str, Any]) -> bool:
    """Whether the job waits in its tenant's queue for a running slot: queued and not yet
    dispatched to the workers. A server from before the queue sends no ``dispatched_at``, and
    none of its jobs wait."""
    return job.get("status") == "queued" and "dispatched_at" in job and job["dispatched_at"] is None


class Resource(dict):
    """A JSON object from the server, plus the ``ETag`` it came with (for conditional GETs)."""

    etag: str | None = None


class Client:
    """``Client()`` finds the server like the CLI does (``drtrain_client.connection``):
    argument, then ``DRTRAIN_URL`` / ``DRTRAIN_API_KEY``, then ``<data-dir>/url`` and
    ``<data-dir>/api-key``, then (URL only) ``http://127.0.0.1:8000``."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 data_dir: str | os.PathLike[str] | None = None, timeout: float = 30,
                 transport: httpx.BaseTransport | None = None,
                 backoff: Backoff | None = None,
                 on_retry: Callable[[DrtrainError, float], None] | None = None) -> None:
        """``on_retry(answer, seconds)`` is called before each wait for a "come back later"
        answer (429, 503) the client will send again: a caller can say why it waits."""
        self.connection: Connection = resolve_connection(base_url, api_key, data_dir)
        self.base_url = self.connection.url
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.on_retry = on_retry
        headers = {"User-Agent": "drtrain-client/0.1", "Accept": "application/json"}
        if self.connection.api_key:
            headers["Authorization"] = f"Bearer {self.connection.api_key}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- datasets -------------------------------------------------------------------------

    def upload_dataset(self, path: str | os.PathLike[str], *, name: str | None = None,
                       label_column: str = "label", side_info_column: str | None = None,
                       labels_file: str | os.PathLike[str] | None = None,
                       progress: ProgressCallback | None = None, wait: bool = True,
                       timeout: float | None = 900, poll: float = 0.5) -> dict[str, Any]:
        """Upload a CSV, NPZ or gzipped IDX file. The file object is handed to httpx, which
        reads it in chunks while sending, so a large file never sits whole in memory.
        ``progress(sent, total)`` is called as the file bytes go out.

        The server answers 202 and checks the file afterwards (status ``validating``). With
        ``wait`` (the default) this then polls until the dataset is ``ready`` and returns it;
        a ``failed`` check raises ``DatasetRejected`` (a 422 with the reason), and a check
        still running after ``timeout`` seconds ``WaitTimeout``. ``wait=False`` returns the
        202 body at once."""
        dataset = self._post_upload(path, name=name, label_column=label_column,
                                    side_info_column=side_info_column,
                                    labels_file=labels_file, progress=progress)
        if not wait or dataset.get("status") != "validating":
            return dataset
        return self.wait_dataset(str(dataset["id"]), timeout=timeout, poll=poll)

    def wait_dataset(self, dataset_id: str, timeout: float | None = None,
                     poll: float = 0.5) -> dict[str, Any]:
        """Poll until the dataset's check has ended: returns it ``ready``, raises
        ``DatasetRejected`` when it ``failed``, ``WaitTimeout`` past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        dataset = self.get_dataset(dataset_id)
        pause = min(poll, 0.1)  # small files are checked in well under a second
        while dataset.get("status") == "validating":
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(dataset_id, "validating", timeout or 0, what="dataset")
                pause = min(pause, remaining)
            time.sleep(pause)
            pause = min(poll, pause * 2)
            dataset = self.get_dataset(dataset_id)
        if dataset.get("status") == "failed":
            raise DatasetRejected(dataset)
        return dataset

    def _post_upload(self, path: str | os.PathLike[str], *, name: str | None,
                     label_column: str, side_info_column: str | None,
                     labels_file: str | os.PathLike[str] | None,
                     progress: ProgressCallback | None) -> dict[str, Any]:
        sources = {"file": Path(path)}
        if labels_file is not None:
            sources["labels_file"] = Path(labels_file)
        form = {"name": name or sources["file"].name, "label_column": label_column}
        if side_info_column:
            form["side_info_column"] = side_info_column
        meter = Meter(sum(p.stat().st_size for p in sources.values()), progress)
        with ExitStack() as stack:
            files = {field: (p.name, CountingReader(stack.enter_context(p.open("rb")), meter),
                             "application/octet-stream") for field, p in sources.items()}
            meter.start()
            return self._json("POST", "/v1/datasets", data=form, files=files)

    def list_datasets(self) -> list[dict[str, Any]]:
        return list(self._pages("/v1/datasets"))

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/datasets/{_path_segment(dataset_id)}")

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{_path_segment(dataset_id)}")

    # ---- jobs -----------------------------------------------------------------------------

    def submit_job(self, spec: Mapping[str, Any], *,
                   idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._json("POST", "/v1/jobs", json=dict(spec), headers=headers)

    @overload
    def get_job(self, job_id: str, etag: None = None) -> Resource: ...
    @overload
    def get_job(self, job_id: str, etag: str | None) -> Resource | None: ...

    def get_job(self, job_id: str, etag: str | None = None) -> Resource | None:
        """The job, with ``.etag`` set. Given the ``etag`` of a copy you hold, answers ``None``
        when the job has not changed since (HTTP 304), which saves the body on polls."""
        headers = {"If-None-Match": etag} if etag else None
        response = self._request("GET", f"/v1/jobs/{_path_segment(job_id)}", headers=headers)
        if response.status_code == 304:
            return None
        job = Resource(response.json())
        job.etag = response.headers.get("etag")
        return job

    def list_jobs(self, status: str | None = None, page_size: int = 50,
                  tag: str | None = None) -> Iterator[dict[str, Any]]:
        """Every job, newest first, following ``next_page_token`` lazily page by page;
        ``status`` and ``tag`` filter."""
        params: dict[str, Any] = {"page_size": page_size}
        if status:
            params["status"] = status
        if tag:
            params["tag"] = tag
        return self._pages("/v1/jobs", params)

    def delete_job(self, job_id: str) -> None:
        """Remove a finished job with its metrics, checkpoints and model (409 while active)."""
        self._request("DELETE", f"/v1/jobs/{_path_segment(job_id)}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{_path_segment(job_id)}/cancel")

    def metrics(self, job_id: str, since: int = 0,
                name: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
        """All metric points with ``seq > since``, in seq order (fetched page by page), only
        those called ``name`` (one name or several) when given."""
        names = {name} if isinstance(name, str) else set(name or ())
        points: list[dict[str, Any]] = []
        while True:
            body = self._json("GET", f"/v1/jobs/{_path_segment(job_id)}/metrics",
                              params={"since": since, "limit": _METRICS_PAGE})
            page = _items(body)
            points.extend(p for p in page if not names or p.get("name") in names)
            if len(page) < _METRICS_PAGE:
                return points
            since = int(body.get("next_since") or page[-1]["seq"])

    def logs(self, job_id: str, attempt: int | None = None, since: int = 0) -> list[str]:
        """The lines one attempt of the job logged (its latest by default), from line
        ``since`` on (0-based: pass the number of lines already read)."""
        params: dict[str, int] = {"since": since}
        if attempt is not None:
            params["attempt"] = attempt
        text = self._request("GET", f"/v1/jobs/{_path_segment(job_id)}/logs", params=params).text
        return text.split("\n")[:-1]  # each line ends with a newline

    def follow_logs(self, job_id: str, attempt: int | None = None,
                    poll: float = 1.0) -> Iterator[tuple[int, str]]:
        """``(attempt, line)`` for every line logged, as it comes, until the job has ended.
        Without ``attempt``, from the latest attempt on, going on to each new one (a retry)."""
        job = self.get_job(job_id)
        current, since = attempt or job["attempt"], 0
        while True:
            # The status is read before the lines: a worker stores its lines before the
            # job's final status, so once that is seen the read after it has them all.
            ended = job.get("status") in TERMINAL_STATUSES
            lines = self.logs(job_id, current, since)
            since += len(lines)
            yield from ((current, line) for line in lines)
            if attempt is None and job["attempt"] > current:
                current, since = current + 1, 0
                continue
            if ended:
                return
            time.sleep(poll)
            job = self.get_job(job_id, etag=job.etag) or job

    def events(self, job_id: str,
               last_event_id: int | str | None = None) -> Iterator[tuple[str, Any, str | None]]:
        """Server-Sent Events of a job as ``(event, data, id)`` until the server ends the stream
        (after a terminal status). ``id`` follows the SSE rule: the last id seen so far, so
        passing it back as ``last_event_id`` resumes without repeating metric points."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, _SSE_READ_TIMEOUT))
        with self._mapped_errors(), self._http.stream(
                "GET", f"/v1/jobs/{_path_segment(job_id)}/events", headers=headers,
                timeout=timeout) as response:
            if response.status_code >= 400:
                response.read()
                raise DrtrainError.from_response(response)
            last = None if last_event_id is None else str(last_event_id)
            yield from parse_sse(response.iter_lines(), last)

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 1.0) -> Resource:
        """Poll until the job is succeeded, failed or cancelled; return it. Raises WaitTimeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get_job(job_id)
        while job.get("status") not in TERMINAL_STATUSES:
            pause = poll
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(job_id, job.get("status"), timeout or 0)
                pause = min(poll, remaining)
            time.sleep(pause)
            fresh = self.get_job(job_id, etag=job.etag)
            if fresh is not None:
                job = fresh
        return job

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        return list(self._pages(f"/v1/jobs/{_path_segment(job_id)}/checkpoints"))

    def download_model(self, job_id: str, path: str | os.PathLike[str], *, resume: bool = True,
                       progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Stream the final model to ``path``. Bytes go to ``<path>.part`` first; an existing
        part file is continued with a Range request. The whole file must hash to the sha256 in
        the ETag before it is renamed into place, so ``path`` is either absent or correct.
        ``progress(received, total)`` is called as bytes arrive (total None if unknown)."""
        return self._download(f"/v1/jobs/{_path_segment(job_id)}/model", Path(path), resume=resume,
                              progress=progress, what="model")

    def download_checkpoint(self, job_id: str, checkpoint_id: str,
                            path: str | os.PathLike[str], *, resume: bool = True,
                            progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Stream one checkpoint (safetensors) to ``path``, verified like ``download_model``."""
        return self._download(f"/v1/jobs/{_path_segment(job_id)}/checkpoints/{_path_segment(checkpoint_id)}",
                              Path(path), resume=resume, progress=progress, what="checkpoint")

    def predict(self, job_id: str, inputs: Sequence[Sequence[float]] | Any) -> dict[str, Any]:
        """Classify ``inputs`` (rows of numbers, or an array) with a succeeded job's model:
        ``predictions``, ``probabilities`` and ``classes`` as the API answers them, for every
        row (more than PREDICT_ROWS go as several requests). A NaN or infinite value is a
        ``ClientError`` naming its row and column: JSON cannot carry it, and the model could
        not use it."""
        rows = inputs.tolist() if hasattr(inputs, "tolist") else [list(r) for r in inputs]
        path = f"/v1/jobs/{_path_segment(job_id)}/predict"
        answers = []
        for start in range(0, max(len(rows), 1), PREDICT_ROWS):
            chunk = rows[start:start + PREDICT_ROWS]
            try:
                answers.append(self._json("POST", path, json={"inputs": chunk}))
            except ValueError as exc:  # the JSON encoder's, before the chunk is sent
                where = first_non_finite(chunk)  # looked for only then: a pass per value
                if where is None:
                    raise
                raise ClientError(f"inputs row {start + where[0]}, column {where[1]}: "
                                  f"{where[2]} is not a finite number") from exc
        if len(answers) == 1:
            return answers[0]
        return {**answers[0],
                "predictions": [p for a in answers for p in a.get("predictions", [])],
                "probabilities": [p for a in answers for p in a.get("probabilities", [])]}

    def queue(self, limit: int = 50, job_id: str | None = None) -> dict[str, Any]:
        """The tenant's queue: ``running_limit`` and ``queued_limit``, how many jobs hold a
        running slot (``dispatched``) and how many wait behind them (``waiting``), the next
        ``limit`` waiting jobs as ``items`` (``{"position", "job_id"}``, position 1 next), and
        with ``job_id`` that job's ``position`` (None when it is not waiting; a 404
        ``DrtrainError`` when it is not one of the tenant's jobs)."""
        params: dict[str, Any] = {"limit": limit}
        if job_id is not None:
            params["job_id"] = job_id
        return self._json("GET", "/v1/queue", params=params)

    # ---- sweeps ---------------------------------------------------------------------------

    def create_sweep(self, base: Mapping[str, Any],
                     grid: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
        return self._json("POST", "/v1/sweeps", json={"base": dict(base), "grid": dict(grid)})

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/sweeps/{_path_segment(sweep_id)}")

    def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        """Cancel every job of the sweep that has not ended; returns the sweep (running jobs
        show ``cancelling`` until their worker stops)."""
        return self._json("POST", f"/v1/sweeps/{_path_segment(sweep_id)}/cancel")

    def delete_sweep(self, sweep_id: str) -> None:
        """Remove a sweep with all its jobs (409 naming those still active; nothing deleted)."""
        self._request("DELETE", f"/v1/sweeps/{_path_segment(sweep_id)}")

    def list_sweeps(self, page_size: int = 50) -> Iterator[dict[str, Any]]:
        """Every sweep, newest first, page by page."""
        return self._pages("/v1/sweeps", {"page_size": page_size})

    # ---- plumbing -------------------------------------------------------------------------

    def _pages(self, url: str,
               params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """The items of a list, following ``next_page_token`` lazily."""
        query = dict(params or {})
        while True:
            body = self._json("GET", url, params=query)
            yield from _items(body)
            token = body.get("next_page_token")
            if not token:
                return
            query["page_token"] = token

    def _download(self, url: str, dest: Path, *, resume: bool,
                  progress: ProgressCallback | None, what: str) -> dict[str, Any]:
        part = dest.with_name(dest.name + ".part")
        if not resume:
            part.unlink(missing_ok=True)
        offset = part.stat().st_size if part.exists() else 0
        fetched = self._fetch(url, part, offset, progress)
        if fetched is None:
            # 416: the part file is not a prefix of this file (longer than it); start over.
            part.unlink(missing_ok=True)
            fetched = self._fetch(url, part, 0, progress)
            if fetched is None:
                raise ClientError("server refused a download from byte 0 (416)")
        expected, actual, offset = fetched
        if expected is not None and actual != expected:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(expected, actual, what=what)
        os.replace(part, dest)
        return {"path": str(dest), "sha256": actual, "size_bytes": dest.stat().st_size,
                "resumed_from": offset}

    def _fetch(self, url: str, part: Path, offset: int,
               progress: ProgressCallback | None) -> tuple[str | None, str, int] | None:
        """Append the body from ``offset`` to ``part``; ``(expected, actual sha256, offset
        actually used)``, or None when the server answers 416 to the Range."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self._mapped_errors(), self._http.stream("GET", url, headers=headers) as response:
            if response.status_code == 416 and offset:
                return None
            if response.status_code >= 400:
                response.read()
                raise DrtrainError.from_response(response)
            if response.status_code == 206:
                start = content_range_start(response.headers.get("content-range"))
                if start != offset:
                    raise ClientError(f"server resumed the download at byte {start}, "
                                      f"not {offset} as asked")
            else:
                offset = 0  # a 200 is the whole file: the server ignored or refused the Range
            length = response.headers.get("content-length", "")
            meter = Meter(offset + int(length) if length.isdigit() else None, progress)
            meter.start(offset)
            try:
                actual = append_chunks(response.iter_bytes(), part, offset, meter)
            except httpx.TransportError as exc:
                raise ClientError(f"download interrupted after {part.stat().st_size} bytes "
                                  f"({exc}); run it again to resume") from exc
            return etag_sha256(response.headers.get("etag")), actual, offset

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self._request(method, url, **kwargs)
        if not response.content:
            return {}
        try:
            return response.json()
        except json.JSONDecodeError as exc:
            raise ClientError(f"{method} {url}: server answered {response.status_code} "
                              "with a body that is not JSON") from exc

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        # A 429 or 503 means "not taken, come back later": waited out and sent again, unless
        # the body is a stream that has been read (an upload), which cannot be sent twice.
        repeatable = "files" not in kwargs and not hasattr(kwargs.get("content"), "read")
        retries = 0
        while True:
            with self._mapped_errors():
                response = self._http.request(method, url, **kwargs)
            if response.status_code < 400:
                return response
            wait = self.backoff.wait(response, retries) if repeatable else None
            if wait is None:
                raise DrtrainError.from_response(response, retries)
            if self.on_retry is not None:
                self.on_retry(DrtrainError.from_response(response, retries), wait)
            time.sleep(wait)
            retries += 1

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Turn httpx transport failures into client errors with a message a person can act on."""
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise UnreachableError(self.base_url, exc, self.connection.url_from) from exc
        except httpx.TimeoutException as exc:
            raise ClientError(f"drtrain at {self.base_url} did not answer in time "
                              f"({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise ClientError(f"request to drtrain at {self.base_url} failed: {exc}") from exc


def first_non_finite(rows: Sequence[Sequence[Any]]) -> tuple[int, int, float] | None:
    """(row, column, value) of the first NaN or infinity in ``rows`` (0-based), or None."""
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if isinstance(value, float) and not math.isfinite(value):
                return i, j, value
    return None


def parse_sse(lines: Iterator[str],
              last_id: str | None = None) -> Iterator[tuple[str, Any, str | None]]:
    """Parse ``text/event-stream`` lines (WHATWG rules: comments, multi-line data, sticky id)."""
    event: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    payload = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ClientError(f"malformed event {event!r}: {text[:200]!r}") from exc
                yield event or "message", payload, last_id
            event, data = None, []
            continue
        if line.startswith(":"):
            continue  # a comment: the server's keep-alive
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            last_id = value


def _items(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        return body["items"]
    raise ClientError('expected a list envelope {"items": [...]} from the server, '
                      f"got {type(body).__name__}")


def _path_segment(value: str) -> str:
    # Ids travel in the path; quoting keeps a stray "/" or "?" from changing the route.
    return quote(str(value), safe=":")
