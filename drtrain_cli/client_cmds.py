"""Client-side commands: ``drtrain datasets ...``, ``drtrain jobs ...``, ``drtrain sweeps ...``.

Each command talks to a running server through ``drtrain_client.Client``. Errors from the
server (problem+json) or the network end the command with a one-line message on stderr and a
non-zero exit code, never a traceback: 1 for an error answer or a job that did not succeed,
2 for bad arguments or input files, 3 when the server cannot be reached.
"""
from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from drtrain_cli import config
from drtrain_client import TERMINAL_STATUSES, Client, ClientError, UnreachableError

EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3

console = Console()
err_console = Console(stderr=True)

datasets_app = typer.Typer(help="Upload, list and delete datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="Submit, watch, inspect and download training jobs.",
                       no_args_is_help=True)
sweeps_app = typer.Typer(help="Run a grid of jobs from one spec.", no_args_is_help=True)

Url = Annotated[str, typer.Option("--url", envvar="DRTRAIN_URL", help="Server URL.")]
Key = Annotated[str | None, typer.Option(
    "--key", envvar="DRTRAIN_API_KEY", show_default=False,
    help="API key (default: the key `drtrain up` wrote into the data folder).")]
DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="DRTRAIN_DATA_DIR", show_default=False,
    help="Embedded data folder holding api-key (default .drtrain).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer (for scripts).")]


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(sweeps_app, name="sweeps")


# ---- plumbing ----------------------------------------------------------------------------

def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def session(url: str, key: str | None, data_dir: Path | None) -> Iterator[Client]:
    """A client for the command's body; client errors become a message and an exit code."""
    try:
        resolved = config.find_key(key, data_dir)
        if not resolved:
            fail(config.missing_key_message(data_dir))
        with config.make_client(url, resolved) as client:
            yield client
    except UnreachableError as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except ClientError as exc:
        fail(str(exc))


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)
    except json.JSONDecodeError as exc:
        fail(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
             EXIT_USAGE)


def read_inputs(path: Path) -> list[list[float]]:
    """Rows for predict from JSON (``[[...]]`` or ``{"inputs": [[...]]}``) or CSV (header
    row optional)."""
    if path.suffix.lower() == ".json":
        data = read_json_file(path)
        rows = data.get("inputs") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            fail(f"{path}: expected a list of rows or {{\"inputs\": [[...], ...]}}", EXIT_USAGE)
        return rows
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            raw = [row for row in csv.reader(fh) if row]
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)
    if raw and not _numeric(raw[0]):
        raw = raw[1:]  # a header row
    rows = []
    for number, row in enumerate(raw, start=1):
        if not _numeric(row):
            fail(f"{path}: data row {number} is not all numbers", EXIT_USAGE)
        rows.append([float(v) for v in row])
    return rows


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _time(value: Any) -> str:
    return str(value)[:19].replace("T", " ") if value else "-"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("-" if value is None else str(value))


def _where(job: dict[str, Any]) -> str:
    parts = [str(job["phase"])] if job.get("phase") else []
    if job.get("layer") is not None:
        parts.append(f"layer {job['layer']}")
    if job.get("epoch") is not None:
        parts.append(f"epoch {job['epoch']}")
    return " ".join(parts)


def _table(headers: list[str], rows: list[list[Any]], *, keep: int = 1,
           title: str | None = None) -> Table:
    """A table whose first ``keep`` columns (ids, which people copy) are never wrapped or
    shortened; the other columns give way on a narrow terminal."""
    table = Table(title=title, box=box.SIMPLE_HEAD)
    cells = [[escape(_num(v)) for v in row] for row in rows]
    for i, header in enumerate(headers):
        if i < keep:
            width = max([len(header), *(len(row[i]) for row in cells)])
            table.add_column(header, no_wrap=True, min_width=width)
        else:
            table.add_column(header)
    for row in cells:
        table.add_row(*row)
    return table


def _kv_table(rows: dict[str, Any], title: str | None = None) -> Table:
    table = Table(show_header=False, title=title, box=None)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows.items():
        table.add_row(escape(name), escape(_num(value)))
    return table


# ---- datasets ----------------------------------------------------------------------------

@datasets_app.command("upload")
def datasets_upload(
    file: Annotated[Path, typer.Argument(metavar="FILE", exists=True, dir_okay=False,
                                         readable=True, help="CSV, NPZ or gzipped IDX images.")],
    name: Annotated[str | None, typer.Option(help="Name (default: the file name).")] = None,
    label_column: Annotated[str, typer.Option(help="CSV column holding the class.")] = "label",
    side_info_column: Annotated[str | None, typer.Option(
        help="CSV column grouping samples for DR instead of the labels.")] = None,
    labels_file: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, help="IDX labels file (with IDX images).")] = None,
    url: Url = config.DEFAULT_URL, key: Key = None, data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Upload a dataset file (streamed, never read whole)."""
    with session(url, key, data_dir) as client:
        ds = client.upload_dataset(file, name=name, label_column=label_column,
                                   side_info_column=side_info_column, labels_file=labels_file)
    if as_json:
        return print_json(ds)
    console.print(f"uploaded dataset [bold]{escape(str(ds.get('id')))}[/] "
                  f"({escape(str(ds.get('name')))}): {ds.get('n_samples')} samples x "
                  f"{ds.get('n_features')} features, {ds.get('n_classes')} classes, "
                  f"visible units {ds.get('visible_units_hint')}", highlight=False, soft_wrap=True)


@datasets_app.command("list")
def datasets_list(url: Url = config.DEFAULT_URL, key: Key = None, data_dir: DataDir = None,
                  as_json: AsJson = False) -> None:
    """List your datasets and the built-in ones."""
    with session(url, key, data_dir) as client:
        items = client.list_datasets()
    if as_json:
        return print_json(items)
    columns = ("id", "name", "n_samples", "n_features", "n_classes")
    console.print(_table(["id", "name", "samples", "features", "classes"],
                         [[ds.get(c) for c in columns] for ds in items]))


@datasets_app.command("get")
def datasets_get(dataset_id: Annotated[str, typer.Argument(metavar="ID")],
                 url: Url = config.DEFAULT_URL, key: Key = None, data_dir: DataDir = None,
                 as_json: AsJson = False) -> None:
    """Show one dataset's summary."""
    with session(url, key, data_dir) as client:
        ds = client.get_dataset(dataset_id)
    if as_json:
        return print_json(ds)
    console.print(_kv_table({k: v if not isinstance(v, (dict, list)) else json.dumps(v)
                             for k, v in ds.items()}))


@datasets_app.command("delete")
def datasets_delete(dataset_id: Annotated[str, typer.Argument(metavar="ID")],
                    url: Url = config.DEFAULT_URL, key: Key = None,
                    data_dir: DataDir = None) -> None:
    """Delete a dataset (refused while an active job uses it)."""
    with session(url, key, data_dir) as client:
        client.delete_dataset(dataset_id)
    console.print(f"deleted dataset {escape(dataset_id)}", highlight=False, soft_wrap=True)


# ---- jobs --------------------------------------------------------------------------------

@jobs_app.command("submit")
def jobs_submit(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC.json", help="A JobSpec.")],
    idempotency_key: Annotated[str | None, typer.Option(
        help="Retry-safe submit: the same key and spec return the original job.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job until it ends.")] = False,
    poll: Annotated[float, typer.Option(min=0, help="Seconds between polls without SSE.")] = 1.0,
    url: Url = config.DEFAULT_URL, key: Key = None, data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Submit a training job."""
    spec = read_json_file(spec_file)
    if not isinstance(spec, dict):
        fail(f"{spec_file}: a JobSpec is a JSON object", EXIT_USAGE)
    with session(url, key, data_dir) as client:
        job = client.submit_job(spec, idempotency_key=idempotency_key)
        if as_json and not watch:
            return print_json(job)
        console.print(f"submitted job [bold]{escape(str(job['id']))}[/] ({job.get('status')})",
                      highlight=False, soft_wrap=True)
        if watch:
            final = watch_job(client, job["id"], poll)
    if watch:
        _finish(final)


@jobs_app.command("watch")
def jobs_watch(job_id: Annotated[str, typer.Argument(metavar="ID")],
               poll: Annotated[float, typer.Option(
                   min=0, help="Seconds between polls when events are unavailable.")] = 1.0,
               url: Url = config.DEFAULT_URL, key: Key = None,
               data_dir: DataDir = None) -> None:
    """Live progress and metrics until the job ends: exit 0 if it succeeded, else 1."""
    with session(url, key, data_dir) as client:
        final = watch_job(client, job_id, poll)
    _finish(final)


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many (0: all).")] = 50,
    url: Url = config.DEFAULT_URL, key: Key = None, data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """List jobs, newest first."""
    with session(url, key, data_dir) as client:
        jobs = client.list_jobs(status=status, page_size=min(limit or 200, 200))
        jobs = list(islice(jobs, limit) if limit else jobs)
    if as_json:
        return print_json(jobs)
    console.print(_table(["id", "status", "progress", "at", "created"], keep=2, rows=[
        [job.get("id"), job.get("status"), f"{100 * float(job.get('progress') or 0):.0f}%",
         _where(job), _time(job.get("created_at"))] for job in jobs]))


@jobs_app.command("get")
def jobs_get(job_id: Annotated[str, typer.Argument(metavar="ID")],
             url: Url = config.DEFAULT_URL, key: Key = None, data_dir: DataDir = None,
             as_json: AsJson = False) -> None:
    """Show a job: status, position in training, final result."""
    with session(url, key, data_dir) as client:
        job = client.get_job(job_id)
    if as_json:
        return print_json(job)
    assert job is not None
    rows = {k: job.get(k) for k in ("id", "status", "status_reason", "dataset_id", "attempt",
                                    "created_at", "started_at", "finished_at")}
    rows["progress"] = f"{100 * float(job.get('progress') or 0):.1f}% {_where(job)}".strip()
    console.print(_kv_table(rows))
    if job.get("result"):
        console.print(_kv_table({k: v for k, v in job["result"].items()
                                 if not isinstance(v, (dict, list))}, title="result"))


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[str, typer.Argument(metavar="ID")],
                url: Url = config.DEFAULT_URL, key: Key = None, data_dir: DataDir = None) -> None:
    """Cancel a queued or running job."""
    with session(url, key, data_dir) as client:
        job = client.cancel_job(job_id)
    console.print(f"job {escape(job_id)} is {escape(str(job.get('status', 'cancelling')))}",
                  highlight=False, soft_wrap=True)


@jobs_app.command("download")
def jobs_download(job_id: Annotated[str, typer.Argument(metavar="ID")],
                  output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False,
                                                       help="Where to save the model.")],
                  resume: Annotated[bool, typer.Option(
                      help="Continue a partial download left by an earlier try.")] = True,
                  url: Url = config.DEFAULT_URL, key: Key = None,
                  data_dir: DataDir = None) -> None:
    """Download the final model (safetensors), verified against its sha256."""
    with session(url, key, data_dir) as client:
        info = client.download_model(job_id, output, resume=resume)
    resumed = f", resumed at byte {info['resumed_from']}" if info["resumed_from"] else ""
    console.print(f"saved {escape(str(output))} ({info['size_bytes']} bytes, sha256 "
                  f"{info['sha256']}{resumed})", highlight=False, soft_wrap=True)


@jobs_app.command("metrics")
def jobs_metrics(job_id: Annotated[str, typer.Argument(metavar="ID")],
                 since: Annotated[int, typer.Option(min=0, help="Only points after this seq.")] = 0,
                 url: Url = config.DEFAULT_URL, key: Key = None, data_dir: DataDir = None,
                 as_json: AsJson = False) -> None:
    """Every metric point recorded for the job."""
    with session(url, key, data_dir) as client:
        points = client.metrics(job_id, since=since)
    if as_json:
        return print_json(points)
    columns = ("seq", "phase", "layer", "epoch", "name", "value")
    console.print(_table(list(columns), [[p.get(c) for c in columns] for p in points]))


@jobs_app.command("checkpoints")
def jobs_checkpoints(job_id: Annotated[str, typer.Argument(metavar="ID")],
                     url: Url = config.DEFAULT_URL, key: Key = None, data_dir: DataDir = None,
                     as_json: AsJson = False) -> None:
    """Checkpoints saved for the job."""
    with session(url, key, data_dir) as client:
        items = client.checkpoints(job_id)
    if as_json:
        return print_json(items)
    columns = ("kind", "layer", "epoch", "size_bytes")
    console.print(_table(["kind", "layer", "epoch", "bytes", "sha256", "created"], [
        [*(c.get(k) for k in columns), str(c.get("sha256", ""))[:12], _time(c.get("created_at"))]
        for c in items]))


@jobs_app.command("predict")
def jobs_predict(job_id: Annotated[str, typer.Argument(metavar="ID")],
                 inputs: Annotated[Path, typer.Option(
                     "--inputs", exists=True, dir_okay=False,
                     help="Rows to classify: FILE.json or FILE.csv.")],
                 url: Url = config.DEFAULT_URL, key: Key = None, data_dir: DataDir = None,
                 as_json: AsJson = False) -> None:
    """Classify rows with a succeeded job's model."""
    rows = read_inputs(inputs)
    with session(url, key, data_dir) as client:
        answer = client.predict(job_id, rows)
    if as_json:
        return print_json(answer)
    probabilities = answer.get("probabilities") or []
    console.print(_table(["row", "prediction", "probability"], [
        [i, label, max(probabilities[i]) if i < len(probabilities) and probabilities[i] else None]
        for i, label in enumerate(answer.get("predictions", []))]))


# ---- sweeps ------------------------------------------------------------------------------

@sweeps_app.command("submit")
def sweeps_submit(sweep_file: Annotated[Path, typer.Argument(
                      metavar="SWEEP.json", help='{"base": JobSpec, "grid": {path: [values]}}')],
                  url: Url = config.DEFAULT_URL, key: Key = None, data_dir: DataDir = None,
                  as_json: AsJson = False) -> None:
    """Submit one job per grid point."""
    body = read_json_file(sweep_file)
    if not isinstance(body, dict) or not isinstance(body.get("base"), dict) \
            or not isinstance(body.get("grid"), dict):
        fail(f'{sweep_file}: expected {{"base": {{...JobSpec}}, "grid": {{...}}}}', EXIT_USAGE)
    with session(url, key, data_dir) as client:
        sweep = client.create_sweep(body["base"], body["grid"])
    if as_json:
        return print_json(sweep)
    console.print(f"submitted sweep [bold]{escape(str(sweep.get('id')))}[/] with "
                  f"{len(sweep.get('children') or [])} jobs", highlight=False, soft_wrap=True)


@sweeps_app.command("get")
def sweeps_get(sweep_id: Annotated[str, typer.Argument(metavar="ID")],
               url: Url = config.DEFAULT_URL, key: Key = None, data_dir: DataDir = None,
               as_json: AsJson = False) -> None:
    """A sweep's jobs and its summary (mean ± std per grid point, seeds pooled)."""
    with session(url, key, data_dir) as client:
        sweep = client.get_sweep(sweep_id)
    if as_json:
        return print_json(sweep)
    console.print(_table(["job", "grid point", "status"], [
        [c.get("job_id"), json.dumps(c.get("grid_point")), c.get("status")]
        for c in sweep.get("children") or []], title=f"sweep {escape(str(sweep.get('id')))}"))
    console.print(_table(["grid point", "done", "metrics (mean ± std)"], [
        [json.dumps(row.get("point")), f"{row.get('n_done', '-')}/{row.get('n', '-')}",
         ", ".join(f"{n}={_num(s.get('mean'))}±{_num(s.get('std'))}"
                   for n, s in sorted((row.get("metrics") or {}).items()))]
        for row in sweep.get("summary") or []], keep=0, title="summary"))


# ---- watching ------------------------------------------------------------------------------

class WatchView:
    """What ``jobs watch`` shows: a progress bar, where training is, the latest metrics."""

    def __init__(self, job_id: str) -> None:
        self.job: dict[str, Any] = {"id": job_id}
        self.latest: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.last_seq = 0
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TaskProgressColumn(), TimeElapsedColumn())
        self.task = self.progress.add_task(f"job {job_id}", total=1.0)

    @property
    def terminal(self) -> bool:
        return self.job.get("status") in TERMINAL_STATUSES

    def update_job(self, job: dict[str, Any]) -> None:
        self.job = dict(job)
        where = _where(job)
        self.progress.update(
            self.task, completed=float(job.get("progress") or 0),
            description=f"{job.get('status')}{' · ' + where if where else ''}")

    def add_metric(self, point: dict[str, Any]) -> None:
        key = (str(point.get("phase")), _num(point.get("layer")), str(point.get("name")))
        self.latest[key] = point
        self.last_seq = max(self.last_seq, int(point.get("seq") or 0))

    def render(self) -> Group:
        table = _table(["phase", "layer", "epoch", "metric", "value"], [
            [phase, layer, p.get("epoch"), name, p.get("value")]
            for (phase, layer, name), p in sorted(self.latest.items())],
            keep=0, title="latest metrics")
        return Group(self.progress, table)


def watch_job(client: Client, job_id: str, poll: float = 1.0) -> dict[str, Any]:
    """Follow a job from its SSE stream; if the stream is unavailable or drops before the
    end, keep going by polling the job and its metrics. Returns the final job."""
    view = WatchView(job_id)
    first = client.get_job(job_id)
    assert first is not None
    view.update_job(first)
    with _display(view) as refresh:
        if view.terminal:
            # Already over: no stream to follow, but the final metrics are still worth showing.
            for point in client.metrics(job_id):
                view.add_metric(point)
        else:
            _follow_events(client, view, refresh)
        etag = None
        while not view.terminal:
            time.sleep(poll)
            job = client.get_job(job_id, etag=etag)
            for point in client.metrics(job_id, since=view.last_seq):
                view.add_metric(point)
            if job is not None:
                etag = job.etag
                view.update_job(job)
            refresh()
    return view.job


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
        err_console.print(f"[yellow]event stream unavailable ({escape(str(exc))}); polling[/]",
                          highlight=False, soft_wrap=True)


def _finish(job: dict[str, Any]) -> None:
    status = job.get("status")
    if status == "succeeded":
        result = {k: v for k, v in (job.get("result") or {}).items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
        console.print(f"job {escape(str(job.get('id')))} succeeded", highlight=False,
                      soft_wrap=True)
        console.print(_kv_table(result))
        return
    reason = f": {job['status_reason']}" if job.get("status_reason") else ""
    fail(f"job {job.get('id')} {status}{reason}")
