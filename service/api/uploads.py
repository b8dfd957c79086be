"""Bounded multipart uploads, shared by ``POST /predict`` and ``POST /api/models``.

The body is parsed from the request stream through ``limited``, which stops reading as soon as
more than the limit has arrived, so an oversized upload is refused without being stored; a
declared ``Content-Length`` above the limit is refused before reading anything
(``declared_too_large``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from service.api.errors import ApiError

MULTIPART_SLACK = 64 * 1024
"""Bytes allowed on top of a file limit for the multipart framing and headers."""


class TooLarge(Exception):
    """The body grew past its limit while it was being read."""


def declared_too_large(request: Request, limit: int) -> bool:
    """True when the request declares a body longer than ``limit`` plus the framing."""
    declared = request.headers.get("content-length")
    return declared is not None and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK


async def limited(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    """``stream`` as it comes, raising ``TooLarge`` once more than ``limit`` plus the framing
    has passed."""
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit + MULTIPART_SLACK:
            raise TooLarge
        yield chunk


FIELD_NAME = "file"
"""The multipart field that carries the uploaded file."""


async def read_form(request: Request, limit: int, *, max_fields: int = 8) -> FormData:
    """The multipart form of ``request``, read through ``limited``: ``TooLarge`` past the
    limit, 400 ``bad_multipart`` when the body does not parse."""
    parser = MultiPartParser(
        request.headers, limited(request.stream(), limit), max_files=1, max_fields=max_fields
    )
    try:
        return await parser.parse()
    except MultiPartException as err:
        raise ApiError(
            400, "bad_multipart", f"cannot parse the multipart body: {err.message}"
        ) from err


def uploaded_file(form: FormData) -> UploadFile:
    """The form's file field, or 422 ``missing_file``."""
    upload = form.get(FIELD_NAME)
    if not isinstance(upload, UploadFile):
        raise ApiError(422, "missing_file", "the multipart body has no file field named 'file'")
    return upload
