"""Images out of request bodies: a raw `image/jpeg|png|webp` body, or multipart parts (`image`, `photo`).

The BodyLimit middleware bounds what is read; multipart parts spool to disk past 1 MiB (Starlette's parser), and
each image is checked against the one-image limit. The bytes are never decoded here: the workers do that.
"""

from __future__ import annotations

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from api.errors import bad_request, payload_too_large, unsupported_format

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
# what browsers and curl send for a file whose type they do not know: the workers tell the format from its bytes
GENERIC_PART_TYPES = ("", "application/octet-stream")
MULTIPART = "multipart/form-data"
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around one image
MAX_FIELDS = 16
MAX_FIELD_BYTES = 64 * 1024
SUFFIXES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}


def media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


async def parse_form(request: Request, *, max_files: int) -> FormData:
    parser = MultiPartParser(
        request.headers, request.stream(), max_files=max_files, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES
    )
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise bad_request(f"malformed multipart body: {exc.message}") from exc


async def _part_bytes(part: UploadFile | str, field: str, limit: int) -> tuple[str, bytes]:
    if not isinstance(part, UploadFile):
        raise bad_request(f"{field} must be a file part (Content-Disposition with a filename)")
    kind = media_type(part.content_type)
    if kind not in IMAGE_TYPES and kind not in GENERIC_PART_TYPES:
        raise unsupported_format(f"{field} is {kind}; send image/jpeg, image/png or image/webp")
    if part.size is not None and part.size > limit:
        raise payload_too_large(part.size, limit)
    data = await part.read()
    if len(data) > limit:
        raise payload_too_large(len(data), limit)
    if not data:
        raise unsupported_format(f"{field} is empty")
    return part.filename or field, data


async def read_image(request: Request, limit: int) -> bytes:
    """The image of POST /v1/recognize: the body itself, or the multipart field `image`."""
    kind = media_type(request.headers.get("content-type"))
    if kind in IMAGE_TYPES:
        body = await request.body()
        if len(body) > limit:
            raise payload_too_large(len(body), limit)
        if not body:
            raise unsupported_format("the body is empty")
        return body
    if kind != MULTIPART:
        shown = kind or "no Content-Type"
        raise unsupported_format(
            f"{shown} is not an image: send image/jpeg, image/png or image/webp as the body, or multipart/form-data "
            "with a file field `image`"
        )
    form = await parse_form(request, max_files=1)
    try:
        part = form.get("image")
        if part is None:
            raise bad_request("the multipart body has no field `image`")
        return (await _part_bytes(part, "image", limit))[1]
    finally:
        await form.close()


async def read_photos(request: Request, limit: int, max_photos: int) -> list[tuple[str, bytes]]:
    """The photos of an enrolment: one or more multipart file fields `photo`, each within `limit` bytes."""
    kind = media_type(request.headers.get("content-type"))
    if kind != MULTIPART:
        raise unsupported_format(f"{kind or 'no Content-Type'}: send multipart/form-data with file fields `photo`")
    form = await parse_form(request, max_files=max_photos)
    try:
        parts = form.getlist("photo")
        if not parts:
            raise bad_request("the multipart body has no field `photo`")
        return [await _part_bytes(part, f"photo {index + 1}", limit) for index, part in enumerate(parts)]
    finally:
        await form.close()
