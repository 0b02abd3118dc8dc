"""HTTP helpers the routers share: ETags, byte ranges and Server-Sent Events framing."""
from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Response
from fastapi.responses import StreamingResponse

from api.schemas.jobs import JobOut
from drtrain.kit.errors import RangeNotSatisfiable


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


def job_response(job: object, status_code: int = 200, **headers: str) -> Response:
    body = JobOut.model_validate(job).model_dump_json()
    etag = 'W/"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
    return Response(body, status_code=status_code, media_type="application/json",
                    headers={"ETag": etag, **headers})


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b | a- | -n`` -> inclusive (start, end), or None for the whole file.

    A header this server does not understand (other unit, several ranges, bad syntax) is
    ignored as RFC 9110 allows; a well-formed range outside the file raises 416.
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, sep, last = header[len("bytes="):].strip().partition("-")
    if not sep or not (first.isdigit() or last.isdigit()):
        return None
    if first and last and not (first.isdigit() and last.isdigit() and int(last) >= int(first)):
        return None  # "9-3" is invalid syntax, not an unsatisfiable range
    unsatisfiable = RangeNotSatisfiable(f"range {header!r} is outside the {size}-byte file",
                                        headers={"Content-Range": f"bytes */{size}"})
    if not first:  # suffix: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise unsatisfiable
        return max(size - n, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        raise unsatisfiable
    return start, end


def sse_frame(event: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def object_download(store: Any, ck: Any, filename: str, range_header: str | None,
                    if_none_match: str | None) -> Response:
    """A stored checkpoint as a download: ETag = its sha256, 304, byte ranges (206/416)."""
    etag = f'"{ck.sha256}"'
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    size = ck.size_bytes
    span = parse_range(range_header, size)
    start, end = span if span else (0, size - 1)
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Length": str(end - start + 1),
               "Content-Disposition": f'attachment; filename="{filename}"'}
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    chunks = store.iter_range(ck.object_key, start, end if size else None)
    return StreamingResponse(chunks, status_code=206 if span else 200,
                             media_type="application/octet-stream", headers=headers)
