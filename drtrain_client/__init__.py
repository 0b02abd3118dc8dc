"""Python client for the drtrain HTTP API: ``Client(base_url, api_key)``, or ``Client()`` to
find the server like the CLI does (see ``connection``); errors in ``errors``."""
from drtrain_client.backoff import Backoff
from drtrain_client.client import (
    JOB_STATUSES,
    TERMINAL_STATUSES,
    Client,
    Resource,
    parse_sse,
    waiting_for_slot,
)
from drtrain_client.connection import (
    DEFAULT_DATA_DIR,
    DEFAULT_URL,
    Connection,
    resolve_connection,
)
from drtrain_client.errors import (
    ChecksumMismatch,
    ClientError,
    DatasetRejected,
    DrtrainError,
    UnreachableError,
    WaitTimeout,
)
from drtrain_client.transfers import ProgressCallback

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_URL",
    "JOB_STATUSES",
    "TERMINAL_STATUSES",
    "Backoff",
    "ChecksumMismatch",
    "Client",
    "ClientError",
    "Connection",
    "DatasetRejected",
    "DrtrainError",
    "ProgressCallback",
    "Resource",
    "UnreachableError",
    "WaitTimeout",
    "parse_sse",
    "resolve_connection",
    "waiting_for_slot",
]
