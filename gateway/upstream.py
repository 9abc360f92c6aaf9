"""The WaveSpeed client, and the one place WaveSpeed's answers and transport failures become
gateway errors.

    UpstreamError (gateway.errors, 502)
    ├── UpstreamRejected      a 4xx other than 429 (or code 4xx in a 200 body): a refusal
    ├── UpstreamRateLimited   429: nothing was created; retry after ``retry_after``
    ├── UpstreamNotSent       the connection failed before the request left: safe to retry
    └── UpstreamOutcomeUnknown  the request may have been acted on: never re-send a submit
        ├── UpstreamUnavailable   5xx (or code >= 500 in a 200 body)
        ├── UpstreamTimeout
        ├── UpstreamDisconnected  the connection broke after the request was sent
        └── UpstreamProtocolError an answer that is not WaveSpeed's envelope

GETs are retried on 429, 5xx and transport errors with backoff; a submit never is.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import httpx

from gateway import jsonio
from gateway.errors import UpstreamError
from gateway.times import parse_retry_after


class UpstreamRejected(UpstreamError):
    code = "upstream_rejected"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.upstream_status = status


class UpstreamRateLimited(UpstreamError):
    code = "upstream_rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamNotSent(UpstreamError):
    code = "upstream_unreachable"


class UpstreamOutcomeUnknown(UpstreamError):
    code = "upstream_outcome_unknown"


class UpstreamUnavailable(UpstreamOutcomeUnknown):
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamOutcomeUnknown):
    code = "upstream_timeout"


class UpstreamDisconnected(UpstreamOutcomeUnknown):
    code = "upstream_disconnected"


class UpstreamProtocolError(UpstreamOutcomeUnknown):
    code = "upstream_protocol_error"


@dataclass(frozen=True)
class Prediction:
    """A WaveSpeed prediction, from a submit answer, a result fetch or a webhook body."""

    id: str
    status: str
    model: str = ""
    outputs: list[str] = field(default_factory=list)
    has_nsfw_contents: list[bool] = field(default_factory=list)
    error: str = ""
    timings: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    @classmethod
    def parse(cls, data: Any) -> Prediction:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
            raise UpstreamProtocolError("prediction without an id")
        outputs = data.get("outputs") or []
        nsfw = data.get("has_nsfw_contents") or []
        timings = data.get("timings") or {}
        return cls(
            id=data["id"],
            status=str(data.get("status") or "created"),
            model=str(data.get("model") or ""),
            outputs=[str(o) for o in outputs] if isinstance(outputs, list) else [],
            has_nsfw_contents=[bool(n) for n in nsfw] if isinstance(nsfw, list) else [],
            error=str(data.get("error") or ""),
            timings=timings if isinstance(timings, dict) else {},
            created_at=str(data.get("created_at") or ""),
        )


def _nothing_sent(exc: BaseException) -> bool:
    """True only when the connection failed before any byte of the request was sent.

    httpx-aiohttp maps aiohttp's ServerDisconnectedError (request already sent) to
    httpx.ConnectTimeout, so the httpx class alone cannot be trusted: look at the cause.
    ConnectionTimeoutError is a connection (or a pool slot) that never came: nothing was sent.
    """
    for cause in _causes(exc):
        if isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return True
        if isinstance(cause, aiohttp.ClientError):
            return False
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc.__cause__
    while seen is not None:
        yield seen
        seen = seen.__cause__


@contextmanager
def map_transport_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as exc:
        if _nothing_sent(exc):
            raise UpstreamNotSent(f"{operation}: could not connect to WaveSpeed") from exc
        if isinstance(exc, httpx.TimeoutException):
            raise UpstreamTimeout(f"{operation}: WaveSpeed did not answer in time") from exc
        raise UpstreamDisconnected(f"{operation}: connection to WaveSpeed lost") from exc


def _message(payload: Any, fallback: str) -> str:
    if isinstance(payload, dict):
        for key in ("message", "error", "detail"):
            value = payload.get(key)
            if isinstance(value, str) and value:
                return value
    return fallback


def _retry_after(response: httpx.Response, default: float) -> float:
    seconds = parse_retry_after(response.headers.get("retry-after"), time.time())
    return default if seconds is None else seconds


def unwrap(response: httpx.Response, operation: str) -> Any:
    """WaveSpeed's envelope -> its ``data``, or the matching Upstream* error."""
    try:
        payload = jsonio.loads(response.content)
    except ValueError:
        payload = None
    status = response.status_code
    # The envelope's code decides on any 2xx (WaveSpeed documents 200; a 201 or 202 carrying
    # a created task must not read as a lost answer, which would leave it to the deadline).
    if 200 <= status < 300 and isinstance(payload, dict) and isinstance(payload.get("code"), int):
        status = payload["code"]
    if status == 200:
        if not isinstance(payload, dict) or "data" not in payload:
            raise UpstreamProtocolError(f"{operation}: answer is not WaveSpeed's envelope")
        return payload["data"]
    message = _message(payload, f"HTTP {response.status_code}")
    if status == 429:
        raise UpstreamRateLimited(f"{operation}: {message}", _retry_after(response, 1.0))
    if 400 <= status < 500:
        raise UpstreamRejected(message, status)
    raise UpstreamUnavailable(f"{operation}: WaveSpeed answered {status}: {message}")


Operation = Literal["submit", "result", "upload", "webhook_secret"]
USER_AGENT = "kontext-gateway/1"


class WaveSpeedClient:
    """WaveSpeed's API over one long-lived ``httpx.AsyncClient`` owned by the app's lifespan."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        api_key: str,
        *,
        get_attempts: int = 4,
        backoff_seconds: float = 0.25,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_call: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        # Requests are built here with only the headers WaveSpeed needs and the client's
        # timeout, and handed to ``send``: httpx's per-request merge of the client's defaults
        # (headers, cookies, base URL, params) and its four default headers, each normalized
        # and encoded on every call, were a tenth of a submit's instructions.
        self._headers = httpx.Headers(
            {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}
        )
        self._timeout = http.timeout.as_dict()
        self._get_attempts = get_attempts
        self._backoff = backoff_seconds
        self._sleep = sleep
        self._on_call = on_call

    async def submit(
        self, wavespeed_id: str, body: dict[str, Any], webhook_url: str | None
    ) -> Prediction:
        url = f"{self._base}/api/v3/{wavespeed_id}"
        if webhook_url:
            url += "?webhook=" + quote(webhook_url, safe="")
        response = await self._send("submit", "POST", url, json=body)
        return Prediction.parse(unwrap(response, "submit"))

    async def get_result(self, prediction_id: str) -> Prediction:
        url = f"{self._base}/api/v3/predictions/{quote(prediction_id, safe='')}/result"
        data = await self._get_with_retries("result", url)
        return Prediction.parse(data)

    async def webhook_secret(self) -> str:
        data = await self._get_with_retries("webhook_secret", f"{self._base}/api/v3/webhook/secret")
        secret = data.get("secret") if isinstance(data, dict) else None
        if not isinstance(secret, str) or not secret:
            raise UpstreamProtocolError("webhook_secret: no data.secret in the answer")
        return secret

    async def upload_binary(self, filename: str, content: bytes, content_type: str) -> str:
        """Upload bytes through WaveSpeed's media endpoint; return the download URL."""
        response = await self._send(
            "upload", "POST", f"{self._base}/api/v3/media/upload/binary",
            files={"file": (filename, content, content_type)},
        )
        data = unwrap(response, "upload")
        url = data.get("download_url") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url:
            raise UpstreamProtocolError("upload: no data.download_url in the answer")
        return url

    async def forward_upload_binary(self, body: bytes, content_type: str) -> Any:
        """Pass a multipart upload through unchanged (body and content type, unparsed);
        return WaveSpeed's ``data``."""
        response = await self._send(
            "upload", "POST", f"{self._base}/api/v3/media/upload/binary",
            content=body, extra_headers={"Content-Type": content_type},
        )
        return unwrap(response, "upload")

    async def create_upload(self, ticket: dict[str, Any]) -> dict[str, Any]:
        """Ask for a pre-signed upload (``POST /api/v3/media/uploads``, JSON ``{filename, size,
        content_type}``); return WaveSpeed's ``data`` with the PUT instruction as
        ``upload: {method, url, headers}``, the shape the official SDK reads, also when the
        answer gave it flat (``upload_url``, ``method``)."""
        response = await self._send(
            "upload", "POST", f"{self._base}/api/v3/media/uploads", json=ticket
        )
        data = unwrap(response, "upload")
        if not isinstance(data, dict) or not isinstance(data.get("download_url"), str):
            raise UpstreamProtocolError("upload: no data.download_url in the answer")
        instruction = data.get("upload")
        if not isinstance(instruction, dict) or not isinstance(instruction.get("url"), str):
            if not isinstance(data.get("upload_url"), str):
                raise UpstreamProtocolError("upload: no upload URL in the answer")
            instruction = {
                "method": str(data.get("method") or "PUT"),
                "url": data["upload_url"],
                "headers": data.get("headers") if isinstance(data.get("headers"), dict) else {},
            }
        return {**data, "upload": instruction}

    async def _get_with_retries(self, operation: Operation, url: str) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._send(operation, "GET", url)
                return unwrap(response, operation)
            except (UpstreamRateLimited, UpstreamNotSent, UpstreamOutcomeUnknown) as exc:
                if attempt >= self._get_attempts:
                    raise
                delay = self._backoff * 2 ** (attempt - 1) * (0.5 + random.random())
                if isinstance(exc, UpstreamRateLimited):
                    delay = max(delay, min(exc.retry_after, 30.0))
                await self._sleep(delay)

    async def _send(
        self, operation: Operation, method: str, url: str,
        extra_headers: dict[str, str] | None = None, **kwargs: Any,
    ) -> httpx.Response:
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = "error"
        headers = self._headers
        if extra_headers:
            headers = httpx.Headers(headers)
            headers.update(extra_headers)
        try:
            with map_transport_errors(operation):
                request = httpx.Request(
                    method, url, headers=headers, extensions={"timeout": self._timeout}, **kwargs
                )
                response = await self._http.send(request)
            outcome = str(response.status_code)
            return response
        finally:
            if self._on_call is not None:
                self._on_call(operation, outcome, loop.time() - started)


def make_http_client(transport: Literal["aiohttp", "httpx"], timeout: float) -> httpx.AsyncClient:
    """The gateway's one outbound client; ``aiohttp`` is the faster transport (see bench/)."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    selected: httpx.AsyncBaseTransport
    if transport == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        selected = AiohttpTransport(limits=limits)
    else:
        selected = httpx.AsyncHTTPTransport(limits=limits)
    return httpx.AsyncClient(transport=selected, timeout=httpx.Timeout(timeout, connect=5.0))
