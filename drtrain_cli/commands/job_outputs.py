"""What jobs leave behind: ``drtrain jobs metrics|compare|checkpoints|checkpoint-download|
download``. Downloads are resumable and verified against the sha256 the server announces."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from drtrain_cli.commands import ids
from drtrain_cli.commands.context import client_command, session
from drtrain_cli.commands.jobs import JobId, app
from drtrain_cli.commands.output import (
    EXIT_USAGE,
    AsJson,
    console,
    fail,
    print_json,
    say,
    shown,
    table,
    transfer_bar,
    warn,
    when,
)

METRIC_COLUMNS = ("seq", "phase", "layer", "epoch", "name", "value", "at")
Output = Annotated[Path, typer.Option("--output", "-o", dir_okay=False,
                                      help="Where to save the file.")]
Resume = Annotated[bool, typer.Option(help="Continue a partial download left by an earlier try.")]


@client_command(app, "metrics")
def metrics(
    ctx: typer.Context,
    job_id: JobId,
    since: Annotated[int, typer.Option(min=0, help="Only points after this seq.")] = 0,
    name: Annotated[list[str] | None, typer.Option(
        "--name", help="Only this metric (repeat for several).")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header row.")] = False,
    as_json: AsJson = False,
) -> None:
    """Every metric point recorded for the job (or only those named)."""
    if as_csv and as_json:
        fail("choose one of --csv and --json", EXIT_USAGE)
    with session(ctx) as client:
        job = ids.job(client, job_id)
        points = client.metrics(job, since=since, name=name)
        missing = sorted(set(name or ()) - {p.get("name") for p in points})
        if missing and since == 0:
            _say_which_names_exist(missing, client.metrics(job))
    if as_json:
        return print_json(points)
    if as_csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(METRIC_COLUMNS)
        writer.writerows([p.get(c) for c in METRIC_COLUMNS] for p in points)
        return typer.echo(buffer.getvalue(), nl=False)
    columns = METRIC_COLUMNS[:-1]
    console.print(table(list(columns), [[p.get(c) for c in columns] for p in points]))


def _say_which_names_exist(missing: list[str], points: list[dict[str, Any]]) -> None:
    """A misspelt --name prints nothing but the header: say so, with the names there are."""
    recorded = sorted({str(p.get("name")) for p in points})
    warn(f"no points named {', '.join(missing)}; this job has "
         + (f"these: {', '.join(recorded)}" if recorded else "none yet"))


@client_command(app, "compare")
def compare(
    ctx: typer.Context,
    job_ids: Annotated[list[str], typer.Argument(
        metavar="ID", help="Two or more jobs (ids or unique starts).")],
    as_json: AsJson = False,
) -> None:
    """Final metrics side by side, and the spec fields in which the jobs differ."""
    if len(job_ids) < 2:
        fail("compare needs at least two jobs", EXIT_USAGE)
    with session(ctx) as client:
        resolved = [ids.job(client, text) for text in job_ids]
        if len(set(resolved)) < len(resolved):
            twice = sorted({i for i in resolved if resolved.count(i) > 1})
            fail(f"compare: {', '.join(twice)} named more than once", EXIT_USAGE)
        jobs = [client.get_job(job_id) for job_id in resolved]
    # The result's own numbers: it also holds each of them again under "metrics" (and the
    # epochs under "epochs"), which would list every figure two or three times.
    results = [{k: v for k, v in (job.get("result") or {}).items() if _is_number(v)}
               for job in jobs]
    specs = [flatten(job.get("spec") or {}) for job in jobs]
    metric_names = sorted({name for result in results for name in result})
    differing = sorted(path for path in {p for spec in specs for p in spec}
                       if len({_comparison_key(spec.get(path, _ABSENT)) for spec in specs}) > 1)
    if as_json:
        return print_json({
            "jobs": [job["id"] for job in jobs],
            "status": [job.get("status") for job in jobs],
            "metrics": {n: [result.get(n) for result in results] for n in metric_names},
            "spec_differences": {p: [spec.get(p) for spec in specs] for p in differing}})
    headers = short_ids([str(job["id"]) for job in jobs])
    console.print(table(["metric", *headers], title="final metrics", rows=[
        ["status", *(job.get("status") for job in jobs)],
        *([n, *(result.get(n) for result in results)] for n in metric_names)]))
    if differing:
        console.print(table(["spec field", *headers], title="spec differences", rows=[
            [p, *(_shown(spec.get(p, _ABSENT)) for spec in specs)] for p in differing]))
    else:
        say("the specs are the same")


@client_command(app, "checkpoints")
def checkpoints(ctx: typer.Context, job_id: JobId, as_json: AsJson = False) -> None:
    """Checkpoints saved for the job (their ids are what checkpoint-download takes)."""
    with session(ctx) as client:
        items = client.checkpoints(ids.job(client, job_id))
    if as_json:
        return print_json(items)
    columns = ("id", "kind", "layer", "epoch", "size_bytes")
    console.print(table(["id", "kind", "layer", "epoch", "bytes", "sha256", "created"],
                        drop=("created", "sha256", "bytes"), rows=[
        [*(c.get(k) for k in columns), str(c.get("sha256", ""))[:12], when(c.get("created_at"))]
        for c in items]))


@client_command(app, "checkpoint-download")
def checkpoint_download(
    ctx: typer.Context,
    job_id: JobId,
    checkpoint_id: Annotated[str, typer.Argument(
        metavar="CKPT_ID", help="A checkpoint id (see `jobs checkpoints`) or its unique start.")],
    output: Output,
    resume: Resume = True,
) -> None:
    """Download one checkpoint (safetensors), verified against its sha256."""
    with session(ctx) as client, transfer_bar(f"checkpoint -> {output.name}") as progress:
        full_job = ids.job(client, job_id)
        info = client.download_checkpoint(full_job, ids.checkpoint(client, full_job,
                                                                   checkpoint_id),
                                          output, resume=resume, progress=progress)
    _saved(output, info)


@client_command(app, "download")
def download(ctx: typer.Context, job_id: JobId, output: Output, resume: Resume = True) -> None:
    """Download the final model (safetensors), verified against its sha256."""
    with session(ctx) as client, transfer_bar(f"model -> {output.name}") as progress:
        info = client.download_model(ids.job(client, job_id), output, resume=resume,
                                     progress=progress)
    _saved(output, info)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted paths: ``{"pretrain": {"dr": {"weight": 1}}}`` gives
    ``{"pretrain.dr.weight": 1}``. Lists and empty objects are leaves."""
    if not isinstance(value, dict) or not value:
        return {prefix: value} if prefix else {}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def short_ids(full: list[str], least: int = 8) -> list[str]:
    """The shortest starts (at least ``least`` characters) that still tell the ids apart."""
    for length in range(least, max(map(len, full), default=0) + 1):
        if len({i[:length] for i in full}) == len(set(full)):
            return [i[:length] for i in full]
    return full


_ABSENT = object()


def _comparison_key(value: Any) -> str:
    # Compared exactly (a table rounds floats); absent differs from every value, null included.
    return "\0absent" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)


def _shown(value: Any) -> str:
    if value is _ABSENT:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _saved(output: Path, info: dict[str, Any]) -> None:
    resumed = f", resumed at byte {info['resumed_from']}" if info["resumed_from"] else ""
    say(f"saved {shown(output)} ({info['size_bytes']} bytes, sha256 "
        f"{info['sha256']}{resumed})")
