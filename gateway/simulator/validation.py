"""Validation of a submit as WaveSpeed does it: the catalog's parameters, plus URL-only images.

Real WaveSpeed receives image URLs; the gateway must upload ``data:`` URIs first, so a
``data:`` URI arriving here is refused (it would be a gateway bug).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from gateway.catalog import MAX_IMAGES, Endpoint, check_params
from gateway.errors import FieldError


def is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def check_submission(
    endpoint: Endpoint, body: Mapping[str, Any], webhook: str | None
) -> list[FieldError]:
    """Every problem with a submit's JSON body and its ``webhook`` query parameter."""
    errors: list[FieldError] = []
    check_params(endpoint, body, errors)
    if "image" in endpoint.param_index and body.get("image") is not None:
        _append(errors, "image", _url_problem(body["image"]))
    if "images" in endpoint.param_index and body.get("images") is not None:
        _append(errors, "images", _images_problem(body["images"]))
    sync = body.get("enable_sync_mode")
    if sync is not None and not isinstance(sync, bool):
        errors.append(FieldError("enable_sync_mode", "must be true or false"))
    if webhook is not None and not is_http_url(webhook):
        errors.append(FieldError("webhook", "must be an http(s) URL"))
    return errors


def describe(errors: list[FieldError]) -> str:
    """WaveSpeed's one-line message: ``field: problem; field: problem``."""
    return "; ".join(f"{error.field}: {error.message}" for error in errors)


def _append(errors: list[FieldError], field: str, problem: str | None) -> None:
    if problem is not None:
        errors.append(FieldError(field, problem))


def _url_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a URL string"
    if value.startswith("data:"):
        return "must be an http(s) URL (data: URIs must be uploaded first)"
    return None if is_http_url(value) else "must be an http(s) URL"


def _images_problem(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of URLs"
    if len(value) > MAX_IMAGES:
        return f"must hold at most {MAX_IMAGES} images"
    for index, item in enumerate(value):
        problem = _url_problem(item)
        if problem is not None:
            return f"item {index} {problem}"
    return None
