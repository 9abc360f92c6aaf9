"""What the simulator remembers: predictions, requests received, webhook deliveries, media.

Plain data with the JSON shapes WaveSpeed uses; behaviour lives in ``state`` and ``sender``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TERMINAL_STATUSES = frozenset({"completed", "failed"})


def utc_now_iso() -> str:
    """ISO-8601 with milliseconds and a Z, as WaveSpeed writes ``created_at``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_prediction_id() -> str:
    return secrets.token_hex(16)


def new_webhook_id() -> str:
    return "msg_" + secrets.token_hex(12)


@dataclass
class Prediction:
    """One task, from submit to its terminal status."""

    id: str
    model: str
    input: dict[str, Any]
    get_url: str
    webhook_url: str | None
    created_at: str = field(default_factory=utc_now_iso)
    status: str = "created"
    outputs: list[str] = field(default_factory=list)
    has_nsfw_contents: list[bool] = field(default_factory=list)
    error: str = ""
    inference_ms: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    def data(self) -> dict[str, Any]:
        """The ``data`` of WaveSpeed's submit and result answers."""
        return {
            "id": self.id,
            "model": self.model,
            "outputs": list(self.outputs),
            "urls": {"get": self.get_url},
            "has_nsfw_contents": list(self.has_nsfw_contents),
            "status": self.status,
            "created_at": self.created_at,
            "error": self.error,
            "timings": {"inference": self.inference_ms},
        }

    def webhook_payload(self) -> dict[str, Any]:
        """The bare prediction WaveSpeed POSTs to a webhook (with the submitted input)."""
        data = self.data()
        return {"id": data.pop("id"), "model": data.pop("model"), "input": self.input, **data}

    def record(self) -> dict[str, Any]:
        """Everything about the prediction, for ``GET /_sim/predictions``."""
        return {**self.webhook_payload(), "webhook_url": self.webhook_url}

    def stale_copy(self) -> Prediction:
        """This prediction as it looked while still processing (for out-of-order webhooks)."""
        return dataclasses.replace(
            self, status="processing", outputs=[], has_nsfw_contents=[], error="", inference_ms=0
        )


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    body_size: int
    at: str = field(default_factory=utc_now_iso)


@dataclass
class WebhookDelivery:
    """One delivery attempt (or, with ``sent`` false, one the lost-webhook fault swallowed)."""

    url: str
    webhook_id: str
    prediction_id: str
    status: str
    body: str
    sent: bool = True
    response_status: int | None = None
    error: str | None = None
    at: str = field(default_factory=utc_now_iso)


@dataclass(frozen=True)
class StoredMedia:
    name: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class PendingUpload:
    token: str
    name: str
    filename: str
    content_type: str


def media_kind(content_type: str) -> str:
    major = content_type.split("/", 1)[0]
    return major if major in ("image", "video", "audio") else "file"


class MediaStore:
    """Uploaded files, kept in memory and served under ``/media/{name}``."""

    def __init__(self) -> None:
        self.files: dict[str, StoredMedia] = {}
        self.pending: dict[str, PendingUpload] = {}

    def store(self, filename: str, content_type: str, data: bytes) -> StoredMedia:
        media = StoredMedia(_media_name(filename), filename, content_type, data)
        self.files[media.name] = media
        return media

    def reserve(self, filename: str, content_type: str) -> PendingUpload:
        """A pre-signed upload: the bytes arrive later with ``PUT /media/put/{token}``."""
        upload = PendingUpload(secrets.token_hex(16), _media_name(filename), filename, content_type)
        self.pending[upload.token] = upload
        return upload

    def fill(self, token: str, data: bytes, content_type: str | None) -> StoredMedia | None:
        upload = self.pending.get(token)
        if upload is None:
            return None
        media = StoredMedia(upload.name, upload.filename, content_type or upload.content_type, data)
        self.files[media.name] = media
        return media


def _media_name(filename: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)[-100:] or "upload"
    return f"{secrets.token_hex(8)}_{safe}"
