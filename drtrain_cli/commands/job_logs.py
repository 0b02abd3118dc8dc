"""``drtrain jobs logs ID [--follow]``: what the worker logged while it ran the job."""
from __future__ import annotations

from typing import Annotated

import typer

from drtrain_cli.commands import ids
from drtrain_cli.commands.context import client_command, session
from drtrain_cli.commands.jobs import JobId, Poll, app
from drtrain_cli.commands.output import err_console

Attempt = Annotated[int | None, typer.Option(
    min=1, help="Which attempt's lines (default: the latest; with --follow, every later one).")]


@client_command(app, "logs")
def logs(
    ctx: typer.Context,
    job_id: JobId,
    attempt: Attempt = None,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new lines until the job ends.")] = False,
    poll: Poll = 1.0,
) -> None:
    """The job's log lines as plain text: its phases, each epoch's metrics, warnings and
    tracebacks."""
    with session(ctx) as client:
        job = ids.job(client, job_id)
        if not follow:
            for line in client.logs(job, attempt):
                typer.echo(line)
            return
        shown = attempt
        for number, line in client.follow_logs(job, attempt, poll):
            if number != shown:
                err_console.print(f"[dim]-- attempt {number} --[/]", highlight=False)
                shown = number
            typer.echo(line)
