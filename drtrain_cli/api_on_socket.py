"""``python -m drtrain_cli.api_on_socket FD``: the API on a listening socket it inherited.

``drtrain up`` binds the port itself, so a busy port fails before anything starts, and no
other process can take the port while the API restarts. (``uvicorn --fd`` would do, but it
opens the descriptor as a Unix socket, so every client address would read wrong.)
"""
from __future__ import annotations

import socket
import sys

import uvicorn

from drtrain_cli.server_cmds import SHUTDOWN_GRACE_SECONDS


def main(argv: list[str]) -> None:
    sock = socket.socket(fileno=int(argv[0]))  # family and type come from the descriptor
    config = uvicorn.Config("api.app:main_app", factory=True, log_level="warning",
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
