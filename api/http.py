"""HTTP helpers the routers share: ETags, byte ranges and Server-Sent Events framing."""
from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Response
from fastapi.responses import StreamingResponse

from drtrain.kit import integrity
from drtrain.kit.errors import NotFound, RangeNotSatisfiable


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in if_none_match.split(","))


def weak_etag(body: bytes) -> str:
    """The ETag of a JSON body: equal bodies, equal tags (weak: the same JSON, not the same
    bytes on the wire, since a proxy may compress it)."""
    return 'W/"' + hashlib.sha256(body).hexdigest()[:32] + '"'


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


def if_range_allows(if_range: str | None, etag: str) -> bool:
    """RFC 9110 If-Range: the Range applies only while the client's validator is a strong
    match for the current ETag; a date (this server sends no Last-Modified), a weak tag or
    another tag means "send the whole file"."""
    if if_range is None:
        return True
    candidate = if_range.strip()
    return not candidate.startswith("W/") and candidate == etag


def object_download(store: Any, ck: Any, filename: str, range_header: str | None,
                    if_none_match: str | None, *, if_range: str | None = None,
                    head: bool = False) -> Response:
    """A stored checkpoint as a download: ETag = its sha256, 304, byte ranges (206/416),
    If-Range, HEAD. A full download is hashed while it streams and aborted before its last
    bytes when the sha256 differs; an object that failed once is checked whole before it is
    served again (a clean 500 problem+json until it verifies)."""
    etag = f'"{ck.sha256}"'
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    size = ck.size_bytes
    span = parse_range(range_header, size) if if_range_allows(if_range, etag) else None
    start, end = span if span else (0, size - 1)
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Length": str(end - start + 1),
               "Content-Disposition": f'attachment; filename="{filename}"'}
    if span:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    status = 206 if span else 200
    if head:
        return Response(status_code=status, media_type="application/octet-stream",
                        headers=headers)
    key = ck.object_key
    try:
        stored_size = store.size(key)
    except FileNotFoundError:
        if getattr(ck, "kind", "final") != "final":
            # Retention pruned it after its row was read: gone, not corrupt.
            raise NotFound(f"checkpoint {ck.id} no longer exists") from None
        raise integrity.missing("download", key, ck.sha256) from None
    if stored_size != size:  # truncated: known before a byte is sent
        integrity.record_failure("download", key, ck.sha256, f"<{stored_size} bytes>")
        raise integrity.failure(key)
    if integrity.is_suspect(key, ck.sha256):
        integrity.verify_chunks(store.iter_range(key, 0, None), ck.sha256, key=key,
                                where="download")
    chunks = store.iter_range(key, start, end if size else None)
    if not span:
        chunks = integrity.verified_stream(chunks, ck.sha256, key=key, where="download")
    return StreamingResponse(chunks, status_code=status, media_type="application/octet-stream",
                             headers=headers)
