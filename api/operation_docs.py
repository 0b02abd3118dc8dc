"""The words of the API reference: a summary and a description for every operation.

Kept in one table (keyed by method and path) so the reference reads as one text; a route's
own docstring, when it has one, wins. ``install`` fills them in; tests/api/test_docs.py fails
for an operation that has neither, and scripts/gen_api_docs.py renders docs/api.md from the
resulting OpenAPI document.
"""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

from drtrain.kit.models import JOB_STATUSES

_AUTH = "Needs `Authorization: Bearer <api key>`; another tenant's ids answer 404."

OPERATIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("GET", "/v1/datasets"): (
        "List datasets",
        "The tenant's uploaded datasets, newest first, then the built-in ones (`builtin:digits`, "
        "and `builtin:fashion-mnist`, `builtin:fashion-mnist-test` and "
        "`builtin:fashion-mnist-coarse` where its files are installed). " + _AUTH),
    ("POST", "/v1/datasets"): (
        "Upload a dataset",
        "Multipart upload of a CSV (header row; a `label` column or the one named by "
        "`label_column`; optional `side_info_column` for the grouping DR uses instead of the "
        "labels), an NPZ (`X`, `y`, optional `groups`) or gzipped IDX images with "
        "`labels_file`. A label or side value may be missing (an empty CSV cell, -1 or empty "
        "text in an array): pretraining uses every row, fine-tuning only the labelled ones, "
        "DR only those with a side value; `n_labelled` and `n_with_side` count them. "
        "The body is streamed to object storage and answered `202` with "
        "`Location` and the dataset in status `validating`; what the headers show (columns, "
        "array shapes and types, declared sizes, mismatched lengths) answers 422 at once. The "
        "whole file is then checked in a process of its own: the dataset becomes `ready` with "
        "its summary, or `failed` with a `status_reason` naming the row or field (ragged rows, "
        "non-numbers, NaN/inf, a single class among the labelled rows, more than "
        "`DRTRAIN_MAX_CLASSES` classes) and nothing stored. Too large answers 413, a full "
        "object store 507. " + _AUTH),
    ("GET", "/v1/datasets/{dataset_id}"): (
        "Get a dataset",
        "Its status (`validating`, `ready`, `failed` with `status_reason`); once ready, shape, "
        "classes and their counts, feature range, the visible-units hint; the sha256 of the "
        "stored file. " + _AUTH),
    ("DELETE", "/v1/datasets/{dataset_id}"): (
        "Delete a dataset",
        "Removes the dataset and its stored file. 409 while an active job uses it, and for "
        "built-in datasets. " + _AUTH),
    ("POST", "/v1/jobs"): (
        "Submit a training job",
        "Queues a JobSpec: optional DBN pretraining (stacked RBMs, CD-k or PCD) with generative "
        "DR, then MLP fine-tuning with feature DR. Shape and bounds are checked, then the spec "
        "against its dataset (features, visible units, parameter count): 422 for either. The "
        "job row is committed as `queued` before the task is published; 202 with `Location`. "
        "An `Idempotency-Key` header makes retries safe: the same key and body answer the "
        "original job (200). A tenant has at most `DRTRAIN_MAX_CONCURRENT_JOBS_PER_TENANT` jobs "
        "dispatched to the workers; a job beyond that is accepted all the same and waits in "
        "the tenant's queue (`GET /v1/queue`), in submit order, until a slot frees. 429 with "
        "`Retry-After` only when the queue holds `DRTRAIN_MAX_QUEUED_JOBS_PER_TENANT` jobs "
        "already. " + _AUTH),
    ("GET", "/v1/jobs"): (
        "List jobs",
        "Newest first in cursor pages (`page_size`, `page_token` from the previous page's "
        "`next_page_token`); `status` filters. " + _AUTH),
    ("GET", "/v1/jobs/{job_id}"): (
        "Get a job",
        "Status (" + ", ".join(f"`{s}`" for s in JOB_STATUSES) + "), phase, "
        "layer, epoch, progress in [0, 1], attempt, the stored spec and, once finished, the "
        "result (test and validation accuracy and loss, epochs, wall seconds, model sha256). "
        "Has an `ETag`; `If-None-Match` answers 304 while nothing changed. " + _AUTH),
    ("GET", "/v1/jobs/{job_id}/metrics"): (
        "Read a job's metrics",
        "Per-epoch points in `seq` order after `since`: reconstruction error, free-energy gap, "
        "DR value and cross-group divergence per pretraining layer; train/validation loss and "
        "accuracy and per-layer gradient norms in fine-tuning; at every epoch the worker's own "
        "figures (`sys.cpu_percent`, `sys.rss_bytes`, and on a GPU `sys.gpu_memory_allocated_"
        "bytes`, `sys.gpu_memory_peak_bytes` and, where NVML is installed, "
        "`sys.gpu_utilization_percent`). Each point's `at` is when its epoch ended (the "
        "worker writes an epoch's points up to `DRTRAIN_RECORD_EVERY_SECONDS` later). Page "
        "with `next_since`. " + _AUTH),
    ("GET", "/v1/jobs/{job_id}/logs"): (
        "Read a job's log",
        "What the worker logged while it ran one attempt of the job (its phases, each epoch's "
        "metrics, warnings and tracebacks) as `text/plain`, one line per line, each ending "
        "with a newline. `attempt` picks the attempt (default: the latest, the job's "
        "`attempt`; one the job has not had answers 404); `since` skips that many lines, so "
        "a reader following a running job asks again with `since` plus the lines it got, "
        "until the job has ended. An attempt keeps at most `DRTRAIN_JOB_LOG_MAX_BYTES` of "
        "lines; the last then says the log was truncated. " + _AUTH),
    ("GET", "/v1/jobs/{job_id}/events"): (
        "Stream a job's events (SSE)",
        "Server-Sent Events: `metric` events (`id:` is the point's seq) and a `status` event "
        "whenever the job changes; resumes after `Last-Event-ID`; keep-alive comments while "
        "idle; the stream ends after a terminal status. " + _AUTH),
    ("POST", "/v1/jobs/{job_id}/cancel"): (
        "Cancel a job",
        "A queued job is cancelled at once; a running one becomes `cancelling` and stops within "
        "one batch of training (202). Cancelling an already cancelled job again answers 200 "
        "with the job, unchanged; 409 for a job that succeeded or failed. " + _AUTH),
    ("DELETE", "/v1/jobs/{job_id}"): (
        "Delete a job",
        "Removes a job that has ended (succeeded, failed, cancelled): its metrics, checkpoints, "
        "model and every stored object under it; 204. 409 while it is queued, running or "
        "cancelling (cancel it first). " + _AUTH),
    ("GET", "/v1/jobs/{job_id}/checkpoints"): (
        "List a job's checkpoints",
        "Layer (pretraining), epoch and final checkpoints with their sha256 and size. A running "
        "job keeps its newest resumable ones (`DRTRAIN_KEEP_CHECKPOINTS`); a job that has "
        "ended keeps only its final checkpoint (the model), and a cancelled or failed one "
        "none. " + _AUTH),
    ("GET", "/v1/jobs/{job_id}/checkpoints/{checkpoint_id}"): (
        "Download a checkpoint",
        "One checkpoint's safetensors file, streamed with `Content-Length`, `ETag` (its sha256) "
        "and `Accept-Ranges: bytes`; Range requests answer 206 (`If-Range` honoured), "
        "`If-None-Match` 304. A running job keeps only its newest `DRTRAIN_KEEP_CHECKPOINTS` "
        "layer/epoch checkpoints and an ended one only its final model. " + _AUTH),
    ("GET", "/v1/jobs/{job_id}/model"): (
        "Download the trained model",
        "The final model as a self-describing safetensors file (docs/model-format.md), streamed "
        "with `Content-Length`, `ETag` (its sha256) and byte ranges (`If-Range` honoured; "
        "`HEAD` answers the headers alone). The bytes are checked against the sha256 as they "
        "stream: a mismatch cuts the stream before its end, and later requests answer 500 "
        "(type `.../problems/integrity`) until the file verifies again; a file missing from "
        "the store answers 410 (type `.../problems/object-missing`). With an S3 store, "
        "`?redirect=true` answers 307 to a short-lived presigned URL. 409 until the job has "
        "succeeded. " + _AUTH),
    ("HEAD", "/v1/jobs/{job_id}/model"): (
        "The trained model's headers",
        "What `GET` answers (`Content-Length`, `ETag`, `Accept-Ranges`; 206 with "
        "`Content-Range` for a Range, 304 for a matching `If-None-Match`) without the body: "
        "the size and hash of the model before downloading it. 409 until the job has "
        "succeeded. " + _AUTH),
    ("POST", "/v1/jobs/{job_id}/predict"): (
        "Predict with the trained model",
        "Class predictions and probabilities (with `classes`, the class of each column) for "
        "up to 10,000 rows of finite float32 inputs, "
        "computed in the API with numpy on the model's weights (loaded only once its sha256 "
        "matches: 500 `.../problems/integrity` otherwise, 410 `.../problems/object-missing` "
        "when the file is not in the store). 409 until the job has "
        "succeeded; 422 for rows of the wrong width. " + _AUTH),
    ("POST", "/v1/sweeps"): (
        "Start a sweep",
        "One child job per point of `grid` (dotted JobSpec paths to lists of values) over the "
        "`base` spec; every point is validated before any job is queued, and a path that "
        "names no JobSpec field (the answer names the closest) or a value listed twice on "
        "one path (seeds replicate a point) is a 422. A path through a "
        "section that is null or absent in `base` switches that section on with its defaults "
        "(`pretrain.dr.weight` over a base without pretraining DR sweeps DR on; over "
        "`\"pretrain\": null` it turns pretraining on too). 202 with `Location`; "
        "429 when the children would pass the tenant's cap. " + _AUTH),
    ("GET", "/v1/sweeps"): (
        "List sweeps",
        "Newest first in cursor pages, each with its grid and its children counted by "
        "status. " + _AUTH),
    ("GET", "/v1/sweeps/{sweep_id}"): (
        "Get a sweep",
        "Its children with status and result, and a summary per grid point with seeds pooled "
        "(mean, sample standard deviation (0 for one run) and `n`, the succeeded runs behind "
        "them, of every final metric). " + _AUTH),
    ("DELETE", "/v1/sweeps/{sweep_id}"): (
        "Delete a sweep",
        "Removes the sweep and every one of its jobs as `DELETE /v1/jobs/{job_id}` removes "
        "one (metrics, checkpoints, models and stored objects), all or nothing; 204. 409 "
        "naming the jobs still queued, running or cancelling, with nothing deleted: cancel "
        "the sweep first (`POST /v1/sweeps/{sweep_id}/cancel`). " + _AUTH),
    ("POST", "/v1/sweeps/{sweep_id}/cancel"): (
        "Cancel a sweep",
        "Cancels every job of the sweep that has not ended, each as "
        "`POST /v1/jobs/{job_id}/cancel` does, in one transaction: waiting and queued jobs now, "
        "running ones within a batch (`cancelling` until their worker stops); jobs that have "
        "ended keep their results. 202 with the sweep; 200 when there was nothing left to "
        "cancel (a repeat). " + _AUTH),
    ("GET", "/v1/queue"): (
        "The tenant's queue",
        "Jobs beyond the tenant's running cap wait here, in submit order, and are dispatched "
        "one per freed slot (a job ending, cancelled, or failed by the reaper). Gives the "
        "limits, how many jobs hold a slot and how many wait, the next `limit` waiting jobs "
        "with their positions, and with `job_id` that job's position (null when it is not "
        "waiting; 404 when it is not one of the tenant's jobs). " + _AUTH),
    ("GET", "/v1/settings"): (
        "Settings a client shows",
        "This server's checkpoint cadence: a running job stores a resumable checkpoint every "
        "`checkpoint_every_epochs` epochs or `checkpoint_every_seconds` s, whichever comes "
        "first, and at the end of each pretraining layer. " + _AUTH),
    ("GET", "/healthz"): ("Liveness", "200 while the API process is up; touches nothing else."),
    ("GET", "/readyz"): (
        "Readiness",
        "200 when the database, the broker and the object store all answer and storage has "
        "room; 503 (problem+json with `Retry-After` and every probe's outcome in `checks`) "
        "naming the one that does not. `storage` is `full` for a minute after a write was "
        "refused for want of space (answered 507), and while the data folder has less than "
        "1 MiB free."),
    ("GET", "/metrics"): (
        "Prometheus metrics",
        "Request counts and durations by route, jobs by status, queue depth, job durations and "
        "integrity failures, in the Prometheus text format. `DRTRAIN_METRICS_ACCESS`: `open`, "
        "`token` (`Authorization: Bearer <DRTRAIN_METRICS_TOKEN>`; 401 without it) or `off` "
        "(404); unset, `token` in production (404 until a token is set) and `open` "
        "elsewhere."),
}


def install(router: APIRouter) -> None:
    """Give the router's operations their summary, and a description where the route has no
    docstring; call before the router is included in the app."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        for method in route.methods or ():
            words = OPERATIONS.get((method, route.path))
            if words is None:
                continue
            summary, description = words
            route.summary = summary
            if not route.description:
                route.description = description
