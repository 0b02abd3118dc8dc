"""Following a job live (``jobs watch``, ``jobs submit --watch``): its event stream when the
server offers one, polling with ETags when it does not, and the exit code from its end."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from drtrain_cli.commands import output
from drtrain_cli.commands.output import (
    console,
    fail,
    kv_table,
    num,
    say,
    shown,
    table,
    warn_about,
    where,
)
from drtrain_cli.commands.queue import queue_state
from drtrain_client import TERMINAL_STATUSES, Client, ClientError, UnreachableError

# How long a watch keeps asking a server that stopped answering (an API restart, say) before
# it gives up with exit 3.
RECONNECT_SECONDS = 120.0


class WatchView:
    """What ``jobs watch`` shows: a progress bar, where training is, the latest metrics."""

    def __init__(self, job_id: str) -> None:
        self.job: dict[str, Any] = {"id": job_id}
        self.latest: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.last_seq = 0
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TaskProgressColumn(), TimeElapsedColumn())
        self.task = self.progress.add_task(f"job {shown(job_id)}", total=1.0)

    @property
    def terminal(self) -> bool:
        return self.job.get("status") in TERMINAL_STATUSES

    def update_job(self, job: dict[str, Any]) -> None:
        self.job = dict(job)
        at = where(job) or queue_state(job)
        self.progress.update(self.task, completed=float(job.get("progress") or 0),
                             description=shown(f"{job.get('status')}{' · ' + at if at else ''}"))

    def add_metric(self, point: dict[str, Any]) -> None:
        key = (str(point.get("phase")), num(point.get("layer")), str(point.get("name")))
        self.latest[key] = point
        self.last_seq = max(self.last_seq, int(point.get("seq") or 0))

    def render(self) -> Group:
        latest = table(["phase", "layer", "epoch", "metric", "value"], [
            [phase, layer, p.get("epoch"), name, p.get("value")]
            for (phase, layer, name), p in sorted(self.latest.items())],
            keep=0, title="latest metrics")
        return Group(self.progress, latest)


def watch_job(client: Client, job_id: str, poll: float = 1.0) -> dict[str, Any]:
    """Follow a job from its SSE stream; if the stream is unavailable or drops before the
    end, keep going by polling the job and its metrics. Returns the final job."""
    view = WatchView(job_id)
    view.update_job(client.get_job(job_id))
    with _display(view) as refresh:
        if view.terminal:
            # Already over: no stream to follow, but the final metrics are still worth showing.
            for point in client.metrics(job_id):
                view.add_metric(point)
        else:
            _follow_events(client, view, refresh)
        _poll_until_over(client, view, refresh, poll)
    return view.job


def _poll_until_over(client: Client, view: WatchView, refresh: Callable[[], None],
                     poll: float) -> None:
    """Poll the job (with its ETag) and its new metrics until it has ended. A server that
    stops answering is asked again for RECONNECT_SECONDS: an API restart ends the stream and
    takes a few seconds, and the job goes on meanwhile."""
    etag, lost_since = None, None
    while not view.terminal:
        time.sleep(poll)
        try:
            job = client.get_job(view.job["id"], etag=etag)
            points = list(client.metrics(view.job["id"], since=view.last_seq))
        except UnreachableError as exc:
            if lost_since is None:  # said once per outage, not once per poll
                lost_since = time.monotonic()
                output.warn(f"{exc}; asking again for up to {RECONNECT_SECONDS:.0f} s")
            elif time.monotonic() - lost_since > RECONNECT_SECONDS:
                raise
            continue
        if lost_since is not None:
            output.err_console.print("reached drtrain again", highlight=False)
            lost_since = None
        for point in points:
            view.add_metric(point)
        if job is not None:
            etag = job.etag
            view.update_job(job)
        refresh()


def finish(job: dict[str, Any]) -> None:
    """Exit 0 with the final metrics if the job succeeded; else exit 1 with the reason."""
    status = job.get("status")
    warn_about(job)
    if status == "succeeded":
        result = {k: v for k, v in (job.get("result") or {}).items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        say(f"job {shown(job.get('id'))} succeeded")
        console.print(kv_table(result))
        return
    reason = f": {job['status_reason']}" if job.get("status_reason") else ""
    fail(f"job {job.get('id')} {status}{reason}")


@contextmanager
def _display(view: WatchView) -> Iterator[Callable[[], None]]:
    """Redraw in place on a terminal; elsewhere (pipes, CI logs) print the final view once."""
    if not console.is_terminal:
        yield lambda: None
        console.print(view.render())
        return
    with Live(view.render(), console=console, refresh_per_second=4) as live:
        yield lambda: live.update(view.render())
        live.update(view.render())


def _follow_events(client: Client, view: WatchView, refresh: Callable[[], None]) -> None:
    try:
        for event, data, _ in client.events(view.job["id"]):
            if event == "status" and isinstance(data, dict):
                view.update_job(data)
            elif event == "metric" and isinstance(data, dict):
                view.add_metric(data)
            refresh()
            if view.terminal:
                return
    except UnreachableError:
        raise  # the server is gone: polling would fail the same way
    except ClientError as exc:
        # Events are a convenience (a proxy may buffer or cut them); polling gives the same data.
        output.err_console.print(
            f"[yellow]event stream unavailable ({shown(exc)}); polling[/]",
            highlight=False, soft_wrap=True)
