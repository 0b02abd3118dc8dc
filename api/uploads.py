"""Streaming multipart parsing for uploads.

FastAPI's ``UploadFile`` parameters would read the whole body before the handler runs,
whatever its size. Here the body is counted while it arrives, so an upload over the limit
is refused (413) as soon as it passes it, whatever Content-Length claimed.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from drtrain.kit.errors import Invalid, TooLarge

# Room for the form's text fields and part headers around the files themselves.
FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass
class ParsedForm:
    fields: dict[str, str]
    files: dict[str, UploadFile]

    async def close(self) -> None:
        for upload in self.files.values():
            await upload.close()


async def _bounded(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise TooLarge(f"upload exceeds the limit of {limit - FORM_OVERHEAD_BYTES} bytes")
        yield chunk


async def parse_multipart(request: Request, max_file_bytes: int) -> ParsedForm:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise Invalid("the body must be multipart/form-data")
    parser = MultiPartParser(request.headers,
                             _bounded(request.stream(), max_file_bytes + FORM_OVERHEAD_BYTES),
                             max_files=2, max_fields=10)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise Invalid(f"malformed multipart body: {exc.message}") from None
    fields: dict[str, str] = {}
    files: dict[str, UploadFile] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files[key] = value
        else:
            fields[key] = value
    return ParsedForm(fields, files)
