"""``drtrain sweeps submit|list|get|cancel|delete``: many jobs from one spec and a grid."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Mapping
from itertools import islice
from pathlib import Path
from typing import Annotated, Any

import typer

from drtrain_cli.commands import ids
from drtrain_cli.commands.context import client_command, session
from drtrain_cli.commands.inputs import read_json_object
from drtrain_cli.commands.output import (
    EXIT_USAGE,
    AsJson,
    Yes,
    confirm,
    console,
    fail,
    none_found,
    num,
    print_json,
    say,
    shown,
    table,
    when,
)

app = typer.Typer(help="Run a grid of jobs from one spec.", no_args_is_help=True)
SweepId = Annotated[str, typer.Argument(metavar="ID", help="A sweep id or its unique start.")]


@client_command(app, "submit")
def submit(
    ctx: typer.Context,
    sweep_file: Annotated[Path, typer.Argument(
        metavar="SWEEP.json", help='{"base": JobSpec, "grid": {path: [values]}}')],
    as_json: AsJson = False,
) -> None:
    """Submit one job per grid point."""
    body = read_json_object(sweep_file, "a sweep")
    if not isinstance(body.get("base"), dict) or not isinstance(body.get("grid"), dict):
        fail(f'{sweep_file}: expected {{"base": {{...JobSpec}}, "grid": {{...}}}}', EXIT_USAGE)
    with session(ctx) as client:
        sweep = client.create_sweep(body["base"], body["grid"])
    if as_json:
        return print_json(sweep)
    say(f"submitted sweep [bold]{shown(sweep.get('id'))}[/] with "
        f"{len(sweep.get('children') or [])} jobs")


@client_command(app, "list")
def list_(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=0, help="At most this many (0: all).")] = 50,
    as_json: AsJson = False,
) -> None:
    """List sweeps, newest first: their grids and how many of their jobs are in each status."""
    with session(ctx) as client:
        pages = client.list_sweeps(page_size=min(limit or 200, 200))
        sweeps = list(islice(pages, limit) if limit else pages)
    if as_json:
        return print_json(sweeps)
    if not sweeps:
        return none_found("no sweeps yet: `drtrain sweeps submit` starts one")
    console.print(table(["id", "jobs", "statuses", "grid", "created"], keep=1,
                        drop=("created", "grid"), rows=[
        [s.get("id"), s.get("n_children"),
         _by_status(s.get("children_by_status") or {}),
         ", ".join(f"{path} ×{len(values)}" for path, values in (s.get("grid") or {}).items()),
         when(s.get("created_at"))] for s in sweeps]))


@client_command(app, "get")
def get(
    ctx: typer.Context,
    sweep_id: SweepId,
    as_csv: Annotated[bool, typer.Option(
        "--csv", help="Only the summary, as CSV with a header row: a row per grid point, its "
                      "swept values, then mean, std and n of each metric.")] = False,
    as_json: AsJson = False,
) -> None:
    """A sweep's jobs and its summary (mean ± std per grid point, seeds pooled)."""
    if as_csv and as_json:
        fail("choose one of --csv and --json", EXIT_USAGE)
    with session(ctx) as client:
        sweep = client.get_sweep(ids.sweep(client, sweep_id))
    if as_json:
        return print_json(sweep)
    if as_csv:
        return typer.echo(summary_csv(sweep.get("summary") or []), nl=False)
    console.print(table(["job", "grid point", "status"], [
        [c.get("job_id"), json.dumps(c.get("grid_point")), c.get("status")]
        for c in sweep.get("children") or []], title=f"sweep {shown(sweep.get('id'))}"))
    console.print(table(["grid point", "done", "metrics (mean ± std)"], [
        [json.dumps(row.get("point")), f"{row.get('n_done', '-')}/{row.get('n', '-')}",
         ", ".join(f"{name}={_mean_std(s)}"
                   for name, s in sorted((row.get("metrics") or {}).items()))]
        for row in sweep.get("summary") or []], keep=0, title="summary"))


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """The summary rows as CSV: the swept paths (seed pooled away), n and n_done, then
    <metric>_mean, <metric>_std and <metric>_n for every metric of any row (empty where a
    point has no succeeded run; the std also where it has one, whose spread is unknown rather
    than the API's 0). A value that is not a number or text is written as JSON."""
    paths = list(dict.fromkeys(path for row in rows for path in row.get("point") or {}))
    names = sorted({name for row in rows for name in row.get("metrics") or {}})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*paths, "n", "n_done",
                     *(f"{name}_{part}" for name in names for part in ("mean", "std", "n"))])
    for row in rows:
        point, metrics = row.get("point") or {}, row.get("metrics") or {}
        writer.writerow([*(_cell(point.get(path)) for path in paths), row.get("n"),
                         row.get("n_done"),
                         *(cell for name in names for cell in _metric_cells(metrics.get(name)))])
    return buffer.getvalue()


def _metric_cells(summary: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    """(mean, std, n) of one metric at one point: empty without a run, std empty for one."""
    if not summary:
        return None, None, None
    n = summary.get("n")
    return summary.get("mean"), summary.get("std") if (n or 0) > 1 else None, n


def _cell(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float)) else json.dumps(value)


def _mean_std(summary: dict[str, Any]) -> str:
    """mean±std, or the one run's figure: the std of a single run is no spread."""
    if summary.get("n") == 1:
        return f"{num(summary.get('mean'))} (1 run)"
    return f"{num(summary.get('mean'))}±{num(summary.get('std'))}"


@client_command(app, "cancel")
def cancel(
    ctx: typer.Context,
    sweep_id: SweepId,
    as_json: AsJson = False,
) -> None:
    """Cancel every job of the sweep that has not ended.

    Waiting and queued jobs are cancelled at once, running ones stop within a batch; jobs that
    have ended keep their results."""
    with session(ctx) as client:
        sweep = client.cancel_sweep(ids.sweep(client, sweep_id))
    if as_json:
        return print_json(sweep)
    counts = Counter(str(c.get("status")) for c in sweep.get("children") or [])
    say(f"sweep {shown(sweep.get('id'))}: {_by_status(counts)}")


def _by_status(counts: Mapping[str, int]) -> str:
    """"2 cancelled, 1 succeeded": jobs counted by status, statuses in name order."""
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


@client_command(app, "delete")
def delete(
    ctx: typer.Context,
    sweep_id: SweepId,
    yes: Yes = False,
) -> None:
    """Delete a sweep with all its jobs: their metrics, checkpoints and models (refused, naming
    them, while any of its jobs is active). Asks first, unless --yes."""
    with session(ctx) as client:
        full_id = ids.sweep(client, sweep_id)
        confirm(f"delete sweep {full_id} with all its jobs, their metrics, checkpoints and "
                "models?", yes)
        client.delete_sweep(full_id)
    say(f"deleted sweep {shown(full_id)}")
