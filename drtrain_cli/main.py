"""The ``drtrain`` command: client commands from ``commands``, server commands from
``server_cmds``. ``--url``, ``--key`` and ``--data-dir`` before a command are read once, by the
root callback (``commands.context``)."""
from __future__ import annotations

import typer

from drtrain_cli import commands, server_cmds

app = typer.Typer(
    name="drtrain",
    help="Training as a service for deep models with diversifying regularization.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
commands.register(app)

server_cmds.register(app)

if __name__ == "__main__":
    app()
