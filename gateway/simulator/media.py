"""Uploads: the two WaveSpeed upload endpoints and ``/media/`` (pre-signed PUT, downloads).

``POST /api/v3/media/upload/binary`` takes a multipart file at once; ``POST
/api/v3/media/uploads`` answers a pre-signed ``PUT /media/put/{token}`` URL plus the download
URL the bytes will have once put. The bytes live in memory (``records.MediaStore``).
"""

from __future__ import annotations

import mimetypes

from starlette.requests import Request
from starlette.responses import Response

from gateway.simulator.envelope import ApiError, json_object, ok, sim_state
from gateway.simulator.multipart import find_file
from gateway.simulator.records import media_kind
from gateway.simulator.state import SimulatorState


async def _bounded_body(request: Request) -> bytes:
    body = await request.body()
    if len(body) > sim_state(request).config.max_upload_bytes:
        raise ApiError(413, "file too large")
    return body


def _download_url(sim: SimulatorState, name: str) -> str:
    return f"{sim.config.base_url()}/media/{name}"


async def upload_binary(request: Request) -> Response:
    sim = sim_state(request)
    body = await _bounded_body(request)
    upload = find_file(request.headers.get("content-type", ""), body, "file")
    if upload is None:
        raise ApiError(400, "file: is required (multipart/form-data field 'file')")
    media = sim.media.store(upload.filename, upload.content_type, upload.data)
    return ok({
        "type": media_kind(media.content_type),
        "download_url": _download_url(sim, media.name),
        "filename": media.filename,
        "size": len(media.data),
    })


async def create_upload(request: Request) -> Response:
    sim = sim_state(request)
    body = await json_object(request)
    filename, size, content_type = body.get("filename"), body.get("size"), body.get("content_type")
    if not isinstance(filename, str) or not filename:
        raise ApiError(400, "filename: is required")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise ApiError(400, "size: must be a non-negative integer")
    if size is not None and size > sim.config.max_upload_bytes:
        raise ApiError(413, "size: file too large")
    if content_type is not None and not isinstance(content_type, str):
        raise ApiError(400, "content_type: must be a string")
    content_type = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
    upload = sim.media.reserve(filename, content_type)
    put_url = f"{sim.config.base_url()}/media/put/{upload.token}"
    # The official SDK 2.x reads the nested ``upload`` instruction; the flat fields are kept
    # for clients written against older answers.
    return ok({
        "upload": {"method": "PUT", "url": put_url, "headers": {"Content-Type": content_type}},
        "upload_url": put_url,
        "download_url": _download_url(sim, upload.name),
        "method": "PUT",
        "filename": filename,
        "size": size,
        "content_type": content_type,
    })


async def put_upload(request: Request) -> Response:
    sim = sim_state(request)
    body = await _bounded_body(request)
    media = sim.media.fill(request.path_params["token"], body, request.headers.get("content-type"))
    if media is None:
        raise ApiError(404, "upload not found")
    return Response(status_code=200)


async def get_media(request: Request) -> Response:
    media = sim_state(request).media.files.get(request.path_params["name"])
    if media is None:
        raise ApiError(404, "media not found")
    return Response(media.data, media_type=media.content_type)
