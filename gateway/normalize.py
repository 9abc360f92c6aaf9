"""Turn a tenant's request body into one normalized ``JobRequest``, or an InvalidRequest
naming every wrong field. Nothing here talks to the network or the store."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal
from urllib.parse import urlsplit

from gateway import catalog, jsonio
from gateway.catalog import Endpoint
from gateway.errors import FieldError, InvalidRequest, NotFound

_DATA_URI = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,", re.ASCII
)


@dataclass(frozen=True)
class ImageInput:
    """An input image: a URL passed through, or decoded data: URI bytes to upload first."""

    url: str | None = None
    content: bytes | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class JobRequest:
    endpoint: Endpoint
    params: dict[str, Any]
    images: tuple[ImageInput, ...]
    callback_url: str | None
    metadata: dict[str, Any] | None
    wait: float
    # The images as the client sent them (URLs or data: URIs): part of the fingerprint.
    raw_images: tuple[Any, ...] = ()
    # Where the request came in: "wavespeed" jobs (POST /api/v3/...) are called back the way
    # WaveSpeed calls back (gateway.compat), "v1" jobs per Standard Webhooks.
    surface: Literal["v1", "wavespeed"] = "v1"

    @cached_property
    def fingerprint(self) -> str:
        """What makes two requests the same under one Idempotency-Key: everything that shapes
        the job, after normalization (so defaults spelled out or left out compare equal).
        Computed only when a key is given."""
        canonical = json.dumps(
            {
                "endpoint": self.endpoint.wavespeed_id, "params": self.params,
                "images": list(self.raw_images), "callback_url": self.callback_url,
                "metadata": self.metadata,
            },
            sort_keys=True, separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def upstream_body(self, image_urls: list[str]) -> dict[str, Any]:
        """The body WaveSpeed documents for this endpoint, images given as URLs."""
        body = dict(self.params)
        if self.endpoint.image_mode == "one":
            body["image"] = image_urls[0]
        elif self.endpoint.image_mode == "many":
            body["images"] = list(image_urls)
        return body


def parse_image(value: Any, field: str, errors: list[FieldError]) -> ImageInput | None:
    if not isinstance(value, str) or not value:
        errors.append(FieldError(field, "must be a URL or a data: URI"))
        return None
    if value.startswith("data:"):
        match = _DATA_URI.match(value)
        if match is None or not match.group("b64"):
            errors.append(FieldError(field, "data: URI must be data:image/<type>;base64,<data>"))
            return None
        mime = match.group("mime") or ""
        if not mime.startswith("image/"):
            errors.append(FieldError(field, f"data: URI must hold an image, not {mime or 'text'}"))
            return None
        try:
            content = base64.b64decode(value[match.end():], validate=True)
        except (binascii.Error, ValueError):
            errors.append(FieldError(field, "data: URI is not valid base64"))
            return None
        if not content:
            errors.append(FieldError(field, "data: URI is empty"))
            return None
        return ImageInput(content=content, content_type=mime)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        errors.append(FieldError(field, "must be an http(s) URL or a data: URI"))
        return None
    return ImageInput(url=value)


def parse_images(value: Any, errors: list[FieldError], field: str = "images") -> list[ImageInput]:
    if value is None:
        return []
    if not isinstance(value, list):
        errors.append(FieldError(field, "must be a list of URLs or data: URIs"))
        return []
    if len(value) > catalog.MAX_IMAGES:
        errors.append(FieldError(field, f"at most {catalog.MAX_IMAGES} images"))
        return []
    parsed = [parse_image(item, f"{field}[{i}]", errors) for i, item in enumerate(value)]
    return [p for p in parsed if p is not None]


def parse_callback_url(
    value: Any, errors: list[FieldError], field: str = "callback_url"
) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(FieldError(field, "must be a string"))
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(FieldError(field, "must be an http(s) URL"))
        return None
    return value


def parse_metadata(value: Any, errors: list[FieldError]) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        errors.append(FieldError("metadata", "must be a JSON object"))
        return None
    if len(jsonio.dumps_bytes(value)) > catalog.MAX_METADATA_BYTES:
        errors.append(FieldError("metadata", f"must be at most {catalog.MAX_METADATA_BYTES} bytes"))
        return None
    return value


def parse_wait(value: Any, errors: list[FieldError]) -> float:
    if value is None:
        return 0.0
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= catalog.MAX_WAIT_SECONDS
    ):
        errors.append(FieldError("wait", f"must be a number of seconds from 0 to {catalog.MAX_WAIT_SECONDS}"))
        return 0.0
    return float(value)


def json_object(body: Any) -> dict[str, Any]:
    """``body`` if it is a JSON object; else the 422 every endpoint gives for it."""
    if not isinstance(body, dict):
        raise InvalidRequest([FieldError("body", "must be a JSON object")])
    return body


def parse_job_request(body: Any) -> JobRequest:
    """Validate and normalize a ``POST /v1/jobs`` body."""
    body = json_object(body)
    errors: list[FieldError] = []
    model = body.get("model")
    if not isinstance(model, str) or not model:
        errors.append(FieldError("model", "is required (e.g. flux-kontext-max)"))
    task = body.get("task")
    if task is not None and task not in ("text-to-image", "edit"):
        errors.append(FieldError("task", "must be text-to-image or edit"))
        task = None
    if "image" in body:
        errors.append(FieldError("image", "use images, a list of URLs or data: URIs"))
    raw_images = body.get("images")
    images = parse_images(raw_images, errors)
    image_count = len(raw_images) if isinstance(raw_images, list) else 0
    callback_url = parse_callback_url(body.get("callback_url"), errors)
    metadata = parse_metadata(body.get("metadata"), errors)
    wait = parse_wait(body.get("wait"), errors)

    endpoint = None
    if isinstance(model, str) and model:
        endpoint = catalog.select_endpoint(model, task, image_count, errors)
    params: dict[str, Any] = {}
    upstream_values = {
        k: v for k, v in body.items() if k not in catalog.GATEWAY_FIELDS and k != "image"
    }
    if endpoint is None:
        catalog.check_params_loosely(upstream_values, errors)
    else:
        if endpoint.image_mode == "one":
            upstream_values["image"] = "<images[0]>"
        elif endpoint.image_mode == "many":
            upstream_values["images"] = ["<images>"]
        params = catalog.check_params(endpoint, upstream_values, errors)
        params.pop("image", None)
        params.pop("images", None)
    if errors or endpoint is None:
        raise InvalidRequest(errors or [FieldError("model", "is required")])
    return JobRequest(
        endpoint=endpoint,
        params=params,
        images=tuple(images),
        callback_url=callback_url,
        metadata=metadata,
        wait=wait,
        raw_images=tuple(raw_images or ()),
    )


@dataclass(frozen=True)
class WaveSpeedRequest:
    """A submit on the WaveSpeed-compatible surface: the job, and ``enable_sync_mode``, which
    the gateway consumes itself (it waits on its own job; WaveSpeed never sees the flag)."""

    job: JobRequest
    sync_mode: bool


def parse_wavespeed_request(wavespeed_id: str, body: Any, webhook: str | None) -> WaveSpeedRequest:
    """Validate a WaveSpeed submit body (``POST /api/v3/{wavespeed_id}``, its ``?webhook=``)
    into the same ``JobRequest`` that ``POST /v1/jobs`` makes. An unknown model is NotFound."""
    endpoint = catalog.BY_WAVESPEED_ID.get(wavespeed_id)
    if endpoint is None:
        raise NotFound(f"model not found: {wavespeed_id}", code="model_not_found")
    body = json_object(body)
    errors: list[FieldError] = []
    sync_mode = body.get("enable_sync_mode", False)
    if not isinstance(sync_mode, bool):
        errors.append(FieldError("enable_sync_mode", "must be true or false"))
        sync_mode = False
    if body.get("enable_base64_output") not in (None, False):
        # Outputs are WaveSpeed's URLs passed through; silently answering URLs would break
        # a client that decodes base64.
        errors.append(FieldError("enable_base64_output", "is not supported by the gateway; outputs are URLs"))
    images: list[ImageInput] = []
    raw_images: list[Any] = []
    if endpoint.image_mode == "one" and body.get("image") is not None:
        raw_images = [body["image"]]
        image = parse_image(body["image"], "image", errors)
        images = [image] if image is not None else []
    elif endpoint.image_mode == "many" and body.get("images") is not None:
        raw_images = body["images"] if isinstance(body["images"], list) else []
        images = parse_images(body["images"], errors)
        if raw_images and len(raw_images) <= catalog.MAX_IMAGES:
            catalog.select_endpoint(wavespeed_id, None, len(raw_images), errors)
    callback_url = parse_callback_url(webhook, errors, field="webhook")
    params = catalog.check_params(endpoint, body, errors)
    params.pop("image", None)
    params.pop("images", None)
    if errors:
        raise InvalidRequest(errors)
    job = JobRequest(
        endpoint=endpoint,
        params=params,
        images=tuple(images),
        callback_url=callback_url,
        metadata=None,
        wait=0.0,
        raw_images=tuple(raw_images),
        surface="wavespeed",
    )
    return WaveSpeedRequest(job=job, sync_mode=sync_mode)
