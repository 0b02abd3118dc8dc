"""Exceptions raised by the drtrain client.

Every failure a caller can meaningfully react to is a ``ClientError``, so a command line or a
script needs one ``except`` clause and never shows an httpx traceback to a user.
"""
from __future__ import annotations

import json
from typing import Any

import httpx


class ClientError(Exception):
    """Base class: anything the client reports instead of a result."""


class DrtrainError(ClientError):
    """The server answered with an error (RFC 9457 problem+json, or something else >= 400)."""

    def __init__(self, status: int, title: str, detail: str | None = None,
                 errors: list[dict[str, Any]] | None = None, *, type_: str | None = None,
                 retry_after: float | None = None, retries: int = 0) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.type_ = type_
        # The server's Retry-After (seconds), and how many times the client already waited
        # and retried before giving up with this answer.
        self.retry_after = retry_after
        self.retries = retries
        super().__init__(self._render())

    def _render(self) -> str:
        text = f"{self.status} {self.title}"
        if self.detail and self.detail != self.title:
            text += f": {self.detail}"
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g} s"
            text += f"; gave up after {self.retries} retries)" if self.retries else ")"
        for err in self.errors:
            line = _format_validation_error(err)
            if line != self.detail:  # the server often repeats the first error as the detail
                text += "\n  - " + line
        return text

    @classmethod
    def from_response(cls, response: httpx.Response, retries: int = 0) -> DrtrainError:
        # The body may not be problem+json (a proxy's HTML page, a crash), so read it defensively.
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        wait = retry_after_seconds(response)
        if not isinstance(body, dict):
            text = response.text.strip()[:500] if response.content else None
            return cls(response.status_code, response.reason_phrase or "HTTP error", text or None,
                       retry_after=wait, retries=retries)
        errors = body.get("errors")
        return cls(
            int(body.get("status") or response.status_code),
            str(body.get("title") or response.reason_phrase or "HTTP error"),
            _detail_text(body.get("detail")),
            errors if isinstance(errors, list) else None,
            type_=body.get("type"), retry_after=wait, retries=retries,
        )


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The ``Retry-After`` of an answer in seconds (the delay form; an HTTP date or anything
    else unreadable counts as absent)."""
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return None if seconds is None or seconds < 0 or seconds != seconds else seconds


class UnreachableError(ClientError):
    """No HTTP answer at all: nothing listens at the URL, DNS failed, or the connection dropped."""

    def __init__(self, url: str, cause: Exception | None = None, source: str = "argument") -> None:
        self.url = url
        self.cause = cause
        # The same words for a laptop and a cluster, for the CLI and for Python: what was
        # tried, why it failed, where the URL came from (``Connection.url_from``), what to
        # check (no guess that `drtrain up` is the server: in production it is not).
        reason = f" ({_reason(cause)})" if cause is not None else ""
        where = {"argument": "as given",
                 "default": "the default: none was given, in DRTRAIN_URL or in a data folder"
                 }.get(source, f"from {source}")
        super().__init__(f"cannot reach drtrain at {url}{reason}: check the URL ({where}) and "
                         "that the API is running there")


def _reason(cause: Exception) -> str:
    """The innermost OS-level words of a connection failure ("Connection refused")."""
    inner: BaseException = cause
    while (deeper := inner.__cause__ or inner.__context__) is not None:
        inner = deeper
    text = getattr(inner, "strerror", None) or str(inner) or type(inner).__name__
    return str(text)


class ChecksumMismatch(ClientError):
    """A downloaded model or checkpoint does not hash to the sha256 announced in its ETag."""

    def __init__(self, expected: str, actual: str, what: str = "model") -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"downloaded {what} is corrupt: sha256 {actual} but the server "
                         f"announced {expected}; the partial file was deleted, try again")


class WaitTimeout(ClientError, TimeoutError):
    """``Client.wait`` gave up before the job reached a terminal status (or
    ``Client.wait_dataset`` before the dataset's check ended)."""

    def __init__(self, job_id: str, status: str | None, timeout: float,
                 what: str = "job") -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(f"{what} {job_id} still {status} after {timeout:g} s")


class DatasetRejected(DrtrainError):
    """An upload the server accepted (202) whose check then failed: a 422 with its reason,
    as if the server had refused it at once. ``dataset`` is the failed dataset."""

    def __init__(self, dataset: dict[str, Any]) -> None:
        self.dataset = dataset
        super().__init__(422, "Unprocessable content",
                         str(dataset.get("status_reason") or "the dataset failed its check"),
                         type_="https://drtrain.dev/problems/invalid")


def _detail_text(detail: Any) -> str | None:
    # FastAPI's own 422s put a list in ``detail``; keep the message readable either way.
    if detail is None or isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(_format_validation_error(d) if isinstance(d, dict) else str(d)
                         for d in detail)
    return json.dumps(detail)


def _format_validation_error(err: Any) -> str:
    if not isinstance(err, dict):
        return str(err)
    loc = err.get("loc") or err.get("field") or err.get("path")
    if isinstance(loc, (list, tuple)):
        loc = ".".join(str(p) for p in loc)
    msg = err.get("msg") or err.get("message") or err.get("detail") or json.dumps(err)
    return f"{loc}: {msg}" if loc else str(msg)
