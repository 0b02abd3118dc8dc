"""Prometheus text for ``/metrics``: requests (in process), jobs by status and durations
(from SQL, the truth about jobs, so every API replica reports the same job numbers)."""
from __future__ import annotations

import hmac

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from api import auth_limits
from api.telemetry import RequestStats
from drtrain.jobs import queue
from drtrain.jobs import repository as q
from drtrain.kit import integrity
from drtrain.kit.errors import NotFound, Unauthorized
from drtrain.kit.models import JobStatus
from drtrain.kit.settings import Settings

DURATION_BUCKETS = (1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
# Durations are taken over the newest finished jobs only, so a scrape stays cheap.
DURATION_WINDOW = 10_000


def metrics_mode(settings: Settings) -> str:
    """"open", "token" or "off"; unset means token in production, open elsewhere."""
    return settings.metrics_access or ("token" if settings.environment == "production" else "open")


def check_metrics_access(request: Request, settings: Settings, authorization: str | None) -> None:
    mode = metrics_mode(settings)
    # An empty token is no token: it must never match an empty credential.
    expected = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if mode == "off" or (mode == "token" and not expected):
        raise NotFound("metrics are not served here (DRTRAIN_METRICS_ACCESS / "
                       "DRTRAIN_METRICS_TOKEN)")
    if mode == "open":
        return
    auth_limits.check(request)
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             expected.encode()):
        if authorization:
            auth_limits.failed(request)
        raise Unauthorized("/metrics needs Authorization: Bearer <metrics token>",
                           headers={"WWW-Authenticate": "Bearer"})


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(stats: RequestStats, factory: sessionmaker[Session]) -> str:
    lines: list[str] = []
    counts, seconds, observed = stats.snapshot()
    lines += ["# HELP drtrain_http_requests_total HTTP requests by route and status.",
              "# TYPE drtrain_http_requests_total counter"]
    for (method, route, status), n in sorted(counts.items()):
        lines.append(f'drtrain_http_requests_total{{method="{method}",route="{_escape_label_value(route)}",'
                     f'status="{status}"}} {n}')
    lines += ["# HELP drtrain_http_request_duration_seconds Time spent answering requests.",
              "# TYPE drtrain_http_request_duration_seconds summary"]
    for (method, route), total in sorted(seconds.items()):
        labels = f'method="{method}",route="{_escape_label_value(route)}"'
        lines.append(f"drtrain_http_request_duration_seconds_sum{{{labels}}} {total:.6f}")
        lines.append(f"drtrain_http_request_duration_seconds_count{{{labels}}} "
                     f"{observed[(method, route)]}")
    with factory() as session:
        by_status = q.count_by_status(session)
        waiting = queue.count_waiting(session)
        spans = q.recent_spans(session, DURATION_WINDOW)
    lines += ["# HELP drtrain_jobs Jobs by status.", "# TYPE drtrain_jobs gauge"]
    for status in JobStatus:
        lines.append(f'drtrain_jobs{{status="{status.value}"}} {by_status.get(status.value, 0)}')
    lines += ["# HELP drtrain_queue_depth Jobs queued and not yet started.",
              "# TYPE drtrain_queue_depth gauge",
              f"drtrain_queue_depth {by_status.get(JobStatus.queued.value, 0)}"]
    lines += ["# HELP drtrain_jobs_waiting Queued jobs waiting in their tenant's queue for a "
              "running slot (the rest of the queued ones are dispatched to the workers).",
              "# TYPE drtrain_jobs_waiting gauge", f"drtrain_jobs_waiting {waiting}"]
    lines += _duration_histogram([(end - start).total_seconds() for start, end in spans
                                  if start is not None and end is not None])
    found = integrity.failures()
    lines += ["# HELP drtrain_integrity_failures_total Stored objects whose sha256 did not match "
              "when served (predict: not loaded; download: stream aborted).",
              "# TYPE drtrain_integrity_failures_total counter"]
    for where in ("download", "predict"):
        lines.append(f'drtrain_integrity_failures_total{{where="{where}"}} {found.get(where, 0)}')
    return "\n".join(lines) + "\n"


def _duration_histogram(durations: list[float]) -> list[str]:
    name = "drtrain_job_duration_seconds"
    lines = [f"# HELP {name} Wall time of finished jobs (newest {DURATION_WINDOW}).",
             f"# TYPE {name} histogram"]
    for bound in DURATION_BUCKETS:
        lines.append(f'{name}_bucket{{le="{bound}"}} {sum(d <= bound for d in durations)}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {len(durations)}')
    lines.append(f"{name}_sum {sum(durations):.3f}")
    lines.append(f"{name}_count {len(durations)}")
    return lines
