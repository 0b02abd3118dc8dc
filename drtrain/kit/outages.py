"""A backend that cannot be reached, said in one line.

The broker or the database down is expected now and then, and something retries it (the
reaper republishes, the next round reaps): a traceback at every attempt would bury the
lines that matter. Anything else still gets its traceback.
"""
from __future__ import annotations

import logging


def outage_text(exc: BaseException) -> str | None:
    """"database unreachable: ..." or "broker unreachable: ..." (the driver's first line), or
    None when ``exc`` is not an outage."""
    # Imported here: their modules are loaded only where a backend is, not by every import.
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(exc, (OperationalError, InterfaceError)):
        return f"database unreachable: {_first_line(exc.orig or exc)}"
    if isinstance(exc, (BrokerError, RedisConnectionError, RedisTimeoutError, ConnectionError)):
        return f"broker unreachable: {_first_line(exc)}"
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def log_failure(log: logging.Logger, level: int, exc: BaseException, message: str,
                *args: object) -> None:
    """``message`` at ``level``: with the outage said after it in one line, or with the
    traceback of anything that is no outage."""
    outage = outage_text(exc)
    if outage is not None:
        log.log(level, message + " (%s)", *args, outage)
    else:
        log.log(level, message, *args, exc_info=exc)
