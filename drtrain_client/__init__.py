"""Python client for the drtrain HTTP API: ``Client(base_url, api_key)``; errors in ``errors``."""
from drtrain_client.client import TERMINAL_STATUSES, Client, Resource, parse_sse
from drtrain_client.errors import (
    ChecksumMismatch,
    ClientError,
    DrtrainError,
    UnreachableError,
    WaitTimeout,
)

__all__ = [
    "TERMINAL_STATUSES",
    "ChecksumMismatch",
    "Client",
    "ClientError",
    "DrtrainError",
    "Resource",
    "UnreachableError",
    "WaitTimeout",
    "parse_sse",
]
