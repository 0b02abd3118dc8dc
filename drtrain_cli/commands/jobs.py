"""``drtrain jobs submit|watch|list|get|cancel|predict``: a job's life. What a job leaves behind
(metrics, comparisons, checkpoints, the model) is in ``job_outputs``."""
from __future__ import annotations

import json
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Annotated, Any

import typer

from drtrain_cli.commands import ids
from drtrain_cli.commands.context import client_command, session
from drtrain_cli.commands.inputs import CsvColumns, read_inputs, read_json_object
from drtrain_cli.commands.output import (
    AsJson,
    Yes,
    confirm,
    console,
    kv_table,
    none_found,
    percent,
    print_json,
    say,
    shown,
    table,
    warn_about,
    when,
    where,
)
from drtrain_cli.commands.queue import queue_line
from drtrain_cli.commands.watch import finish, watch_job
from drtrain_client import JOB_STATUSES, Client, DrtrainError

app = typer.Typer(help="Submit, watch, compare, inspect and download training jobs.",
                  no_args_is_help=True)

JobId = Annotated[str, typer.Argument(metavar="ID", help="A job id or its unique start.")]
Poll = Annotated[float, typer.Option(
    min=0, help="Seconds between polls when events are unavailable.")]


@client_command(app, "submit")
def submit(
    ctx: typer.Context,
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC.json", help="A JobSpec.")],
    idempotency_key: Annotated[str | None, typer.Option(
        help="Retry-safe submit: the same key and spec return the original job.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the job until it ends.")] = False,
    poll: Poll = 1.0,
    as_json: AsJson = False,
) -> None:
    """Submit a training job."""
    spec = read_json_object(spec_file, "a JobSpec")
    with session(ctx) as client:
        job = client.submit_job(spec, idempotency_key=idempotency_key)
        warn_about(job)
        if not watch:
            if as_json:
                return print_json(job)
            return say(f"submitted job [bold]{shown(job['id'])}[/] ({shown(job.get('status'))})")
        say(f"submitted job [bold]{shown(job['id'])}[/] ({shown(job.get('status'))})")
        final = watch_job(client, job["id"], poll)
    finish(final)


@client_command(app, "watch")
def watch(ctx: typer.Context, job_id: JobId, poll: Poll = 1.0) -> None:
    """Live progress and metrics until the job ends: exit 0 if it succeeded, else 1."""
    with session(ctx) as client:
        final = watch_job(client, ids.job(client, job_id), poll)
    finish(final)


# The client's list of statuses as a choice: a status that is none is a usage error (exit 2)
# before anything is sent.
Status = StrEnum("Status", {name: name for name in JOB_STATUSES})  # type: ignore[misc]


@client_command(app, "list")
def list_(
    ctx: typer.Context,
    status: Annotated[Status | None, typer.Option(help="Only jobs in this status.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only jobs carrying this tag.")] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many (0: all).")] = 50,
    as_json: AsJson = False,
) -> None:
    """List jobs, newest first."""
    with session(ctx) as client:
        pages = client.list_jobs(status=status.value if status else None,
                                 page_size=min(limit or 200, 200), tag=tag)
        jobs = list(islice(pages, limit) if limit else pages)
    if as_json:
        return print_json(jobs)
    if not jobs:
        where_ = "".join(f" {word} {value}" for word, value in
                         (("in status", status and status.value), ("tagged", tag)) if value is not None)
        return none_found(f"no jobs{where_}")
    console.print(table(["id", "name", "status", "progress", "at", "created"], keep=3,
                        drop=("created", "at", "progress"), rows=[
        [job.get("id"), _name(job), job.get("status"), percent(job.get("progress")),
         where(job), when(job.get("created_at"))] for job in jobs]))


def _name(job: dict[str, Any]) -> str:
    """The job's name, and for a sweep's job its grid point (its siblings share the name)."""
    point = " ".join(f"{path}={json.dumps(value)}"
                     for path, value in (job.get("grid_point") or {}).items())
    return " ".join(part for part in (job.get("name") or "", point) if part)


@client_command(app, "get")
def get(ctx: typer.Context, job_id: JobId, as_json: AsJson = False) -> None:
    """Show a job: status, position in training, final result."""
    with session(ctx) as client:
        job = client.get_job(ids.job(client, job_id))
        queued = None if as_json else queue_line(client, job)
    if as_json:
        return print_json(job)
    rows = {"id": job.get("id"), "name": _name(job) or None, "status": job.get("status")}
    if job.get("sweep_id"):
        rows["sweep"] = job["sweep_id"]
    if queued:
        rows["queue"] = queued
    rows |= {k: job.get(k) for k in ("status_reason", "dataset_id", "attempt", "created_at",
                                     "started_at", "finished_at")}
    rows["tags"] = ", ".join(job.get("tags") or [])
    rows["progress"] = f"{percent(job.get('progress'), 1)} {where(job)}".strip()
    console.print(kv_table(rows))
    if job.get("result"):
        console.print(kv_table({k: v for k, v in job["result"].items()
                                if not isinstance(v, (dict, list))}, title="result"))
    warn_about(job)


@client_command(app, "delete")
def delete(ctx: typer.Context, job_id: JobId, yes: Yes = False) -> None:
    """Delete a finished job: its metrics, checkpoints and model (refused while it is active).
    Asks first, unless --yes."""
    with session(ctx) as client:
        full_id = ids.job(client, job_id)
        confirm(f"delete job {full_id} with its metrics, checkpoints and model?", yes)
        client.delete_job(full_id)
    say(f"deleted job {shown(full_id)}")


@client_command(app, "cancel")
def cancel(ctx: typer.Context, job_id: JobId) -> None:
    """Cancel a queued or running job."""
    with session(ctx) as client:
        full_id = ids.job(client, job_id)
        job = client.cancel_job(full_id)
    say(f"job {shown(full_id)} is {shown(job.get('status', 'cancelling'))}")


@client_command(app, "predict")
def predict(
    ctx: typer.Context,
    job_id: JobId,
    inputs: Annotated[Path, typer.Option("--inputs", exists=True, dir_okay=False,
                                         help="Rows to classify: FILE.json or FILE.csv.")],
    as_json: AsJson = False,
) -> None:
    """Classify rows with a succeeded job's model. A CSV's header row may name a `label`
    column and the dataset's label and side columns: they are left out of the rows. When the
    training set was a CSV, the header's columns are matched to its features by name."""
    with session(ctx) as client:
        full_id = ids.job(client, job_id)
        columns = _columns(client, full_id) if inputs.suffix.lower() == ".csv" else None
        answer = client.predict(full_id, read_inputs(inputs, columns))
    if as_json:
        return print_json(answer)
    probabilities = answer.get("probabilities") or []
    console.print(table(["row", "prediction", "probability"], [
        [i, label, max(probabilities[i]) if i < len(probabilities) and probabilities[i] else None]
        for i, label in enumerate(answer.get("predictions", []))]))


def _columns(client: Client, job_id: str) -> CsvColumns:
    """What a CSV header is read against: the column names that are no input of the job's
    model (`label`, and its dataset's label and side columns), and the dataset's feature
    names when it keeps them, while the dataset still exists."""
    names = {"label"}
    try:
        dataset = client.get_dataset(str(client.get_job(job_id).get("dataset_id")))
    except DrtrainError as exc:
        if exc.status != 404:
            raise
        return CsvColumns(names, None)
    names |= {c for c in (dataset.get("label_column"), dataset.get("side_info_column")) if c}
    return CsvColumns(names, dataset.get("feature_names"))
