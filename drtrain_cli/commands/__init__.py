"""The client-side commands, one module per noun: ``datasets``, ``jobs`` (with ``job_outputs``
and ``job_logs``), ``sweeps``, and ``queue`` (a single command). They share ``context`` (how
the server is found), ``output`` and ``ids``."""
from __future__ import annotations

import typer

# job_outputs and job_logs add their commands to the jobs app when imported.
from drtrain_cli.commands import datasets, job_logs, job_outputs, jobs, queue, sweeps
from drtrain_cli.commands.context import client_command, root_callback

__all__ = ["datasets", "job_logs", "job_outputs", "jobs", "queue", "register", "sweeps"]


def register(app: typer.Typer) -> None:
    """Add the client commands, and the root callback that reads the global options."""
    app.callback()(root_callback)
    app.add_typer(datasets.app, name="datasets")
    app.add_typer(jobs.app, name="jobs")
    app.add_typer(sweeps.app, name="sweeps")
    client_command(app, "queue")(queue.show_queue)
