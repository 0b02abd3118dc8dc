"""The ``drtrain`` command: client commands here, server commands from ``server_cmds``."""
from __future__ import annotations

import typer

from drtrain_cli import client_cmds

app = typer.Typer(
    name="drtrain",
    help="Training as a service for deep models with diversifying regularization.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
client_cmds.register(app)

try:
    from drtrain_cli.server_cmds import register as register_server_cmds
except ModuleNotFoundError as exc:
    # Only the module's absence is tolerated (client-only installs and development before the
    # server commands land); an import error inside server_cmds must still surface.
    if exc.name != "drtrain_cli.server_cmds":
        raise
else:
    register_server_cmds(app)

if __name__ == "__main__":
    app()
