"""Just enough multipart/form-data parsing to read one uploaded file.

The project does not depend on python-multipart (which Starlette's ``request.form()`` needs),
so the simulator splits the body on the boundary itself and reads each part's headers with
the standard library's email parser.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser


@dataclass(frozen=True)
class UploadedFile:
    field: str
    filename: str
    content_type: str
    data: bytes


def _parse_headers(block: bytes) -> Message:
    return BytesHeaderParser().parsebytes(block + b"\r\n\r\n")


def _content_type(headers: Message, filename: str) -> str:
    if headers.get("content-type"):
        return headers.get_content_type()
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _boundary(content_type: str) -> bytes | None:
    header = _parse_headers(b"Content-Type: " + content_type.encode("latin-1"))
    if header.get_content_type() != "multipart/form-data":
        return None
    boundary = header.get_param("boundary")
    return boundary.encode("latin-1") if isinstance(boundary, str) and boundary else None


def _parts(body: bytes, boundary: bytes) -> list[UploadedFile]:
    # Each part is preceded by CRLF "--boundary"; prefixing CRLF makes the first one alike.
    segments = (b"\r\n" + body).split(b"\r\n--" + boundary)
    parts = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            break  # the closing delimiter
        _, _, rest = segment.partition(b"\r\n")  # the rest of the boundary line
        head, separator, data = rest.partition(b"\r\n\r\n")
        if not separator:
            continue
        headers = _parse_headers(head)
        name = headers.get_param("name", header="content-disposition")
        filename = headers.get_filename()
        if isinstance(name, str) and filename is not None:
            parts.append(UploadedFile(name, filename, _content_type(headers, filename), data))
    return parts


def find_file(content_type: str, body: bytes, field: str) -> UploadedFile | None:
    """The file sent in form field ``field``, or None when the body has no such file part."""
    boundary = _boundary(content_type)
    if boundary is None:
        return None
    return next((part for part in _parts(body, boundary) if part.field == field), None)
