"""Domain errors raised by services, mapped to RFC 9457 problem+json by one handler.

Services raise these; only routers (and nothing below them) know about HTTP.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def validation_message(error: Mapping[str, Any]) -> str:
    """A pydantic error's message, without the "Value error, " it puts before the words of
    our own validators."""
    return str(error.get("msg", "")).removeprefix("Value error, ")


class DomainError(Exception):
    status: int = 400
    title: str = "Bad request"
    type_: str = "about:blank"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


class NotFound(DomainError):
    status, title, type_ = 404, "Not found", "https://drtrain.dev/problems/not-found"


class Unauthorized(DomainError):
    status, title, type_ = 401, "Unauthorized", "https://drtrain.dev/problems/unauthorized"


class Conflict(DomainError):
    status, title, type_ = 409, "Conflict", "https://drtrain.dev/problems/conflict"


class Invalid(DomainError):
    """Well-formed request whose content is wrong (bad spec, malformed dataset)."""

    status, title, type_ = 422, "Unprocessable content", "https://drtrain.dev/problems/invalid"


class TooLarge(DomainError):
    status, title, type_ = 413, "Content too large", "https://drtrain.dev/problems/too-large"


class TooManyJobs(DomainError):
    status, title, type_ = 429, "Too many active jobs", "https://drtrain.dev/problems/too-many-jobs"


class RangeNotSatisfiable(DomainError):
    status, title, type_ = 416, "Range not satisfiable", "https://drtrain.dev/problems/range"


class Unavailable(DomainError):
    status, title, type_ = 503, "Service unavailable", "https://drtrain.dev/problems/unavailable"


class QuotaExceeded(DomainError):
    """An upload that would take the tenant past its storage quota (413)."""

    status, title, type_ = 413, "Storage quota exceeded", "https://drtrain.dev/problems/storage-quota"


class QuotaExhausted(DomainError):
    """New work refused while the tenant is at its storage quota (429: free space first)."""

    status, title, type_ = 429, "Storage quota exhausted", "https://drtrain.dev/problems/storage-quota"


class TooManyAuthFailures(DomainError):
    status, title, type_ = (429, "Too many failed authentications",
                            "https://drtrain.dev/problems/auth-rate-limited")


class IntegrityFailure(DomainError):
    """Stored bytes whose sha256 is not the one recorded: never served as if they were right."""

    status, title, type_ = 500, "Integrity check failed", "https://drtrain.dev/problems/integrity"


class ObjectMissing(DomainError):
    """A stored object that its row records is not in the store (an emptied or replaced
    bucket, a lost folder): gone, not altered. Restoring the store from a backup brings it
    back (docs/operations.md)."""

    status, title, type_ = 410, "Stored object missing", "https://drtrain.dev/problems/object-missing"


class TooManyRequests(DomainError):
    """A per-tenant concurrency limit (streams, uploads) is reached; retry later."""

    status, title, type_ = 429, "Too many requests", "https://drtrain.dev/problems/too-many-requests"


class InsufficientStorage(DomainError):
    """The object store (or the API's temporary space) is full: say what could not be kept."""

    status, title, type_ = (507, "Insufficient storage",
                            "https://drtrain.dev/problems/insufficient-storage")


def _subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


# Every problem ``type`` the API answers with: RFC 9457's default (an HTTP error with no type
# of its own: an unknown route, a wrong method, a stalled body) and each domain error's.
PROBLEM_TYPES: tuple[str, ...] = tuple(dict.fromkeys(
    ["about:blank", *(cls.type_ for cls in _subclasses(DomainError))]))
