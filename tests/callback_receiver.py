"""A tenant's callback endpoint on a real socket, for the callback tests.

It verifies every delivery with the ``standardwebhooks`` library against the secrets the test
gives it (recording which ones verify), and answers from a script: a status, headers and a
delay per delivery, then ``default_status``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.helpers import wait_until
from tests.servers import Served, serve, serve_on


@dataclass
class Delivery:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes
    verified_with: list[str]  # the receiver's secrets that verified it

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def signatures(self) -> list[str]:
        return self.headers["webhook-signature"].split()


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Receiver:
    def __init__(self, secrets: list[str] | None = None, default_status: int = 200) -> None:
        self.secrets: list[str] = list(secrets or [])
        self.default_status = default_status
        self.script: deque[Answer] = deque()
        self.deliveries: list[Delivery] = []
        self.served: Served | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    @property
    def url(self) -> str:
        assert self.served is not None
        return self.served.url

    async def start(self, sock: Any = None, url: str | None = None) -> Receiver:
        if sock is not None:
            assert url is not None
            self.served = await serve_on(self.app, sock, url)
        else:
            self.served = await serve(self.app)
        return self

    async def stop(self) -> None:
        if self.served is not None:
            await self.served.stop()

    def answer(self, *answers: Answer | int) -> None:
        self.script.extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified.append(secret)
        self.deliveries.append(Delivery(time.time(), request.url.path, headers, body, verified))
        answer = self.script.popleft() if self.script else Answer(self.default_status)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return Response(f"answer {answer.status}", status_code=answer.status, headers=answer.headers)

    def of_type(self, event_type: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.payload["type"] == event_type]

    async def wait_for(self, count: int, within: float = 10.0) -> list[Delivery]:
        await wait_until(lambda: len(self.deliveries) >= count, within, what=f"{count} deliveries")
        return self.deliveries

    def assert_all_verified(self) -> None:
        """Every delivery so far verified with at least one of the receiver's secrets."""
        unverified = [d.webhook_id for d in self.deliveries if not d.verified_with]
        assert not unverified, f"deliveries that did not verify: {unverified}"
