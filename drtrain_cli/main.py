"""The ``drtrain`` command: client commands here, server commands from ``server_cmds``."""
from __future__ import annotations

import typer

from drtrain_cli import client_cmds, server_cmds

app = typer.Typer(
    name="drtrain",
    help="Training as a service for deep models with diversifying regularization.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
client_cmds.register(app)

server_cmds.register(app)

if __name__ == "__main__":
    app()
