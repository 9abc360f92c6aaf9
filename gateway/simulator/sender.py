"""Webhook deliveries to the ``?webhook=`` URL, signed exactly as WaveSpeed signs them (v3).

One attempt per delivery, no retries; every attempt is recorded. The webhook faults act here:
lost, duplicated (same webhook-id and body), late, and out of order (a stale "processing"
delivery after the terminal one).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from gateway.logs import get_logger
from gateway.simulator.config import Dice, SimulatorConfig
from gateway.simulator.records import Prediction, WebhookDelivery, new_webhook_id
from gateway.upstream import make_http_client
from gateway.webhooks.wavespeed_signature import signed_headers

log = get_logger()


def encode(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class WebhookSender:
    def __init__(self, config: SimulatorConfig, dice: Dice, log_: list[WebhookDelivery]) -> None:
        self._config = config
        self._dice = dice
        self._log = log_
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        timeout = self._config.webhook_timeout_seconds
        transport = self._config.webhook_transport
        # Over sockets, the gateway's own client: aiohttp's transport, connections kept alive
        # (httpx's default transport costs several times the CPU per call, and keeps only 20
        # connections: at more deliveries in flight, most would open a new connection).
        self._client = (
            make_http_client("aiohttp", timeout) if transport is None
            else httpx.AsyncClient(timeout=timeout, transport=transport)
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def deliver(self, prediction: Prediction) -> None:
        """Send the terminal webhook of ``prediction``, as the fault knobs say."""
        url = prediction.webhook_url
        if url is None:
            return
        faults = self._config.faults
        # Every decision is taken before the first await, so that it does not depend on timing.
        lost = self._dice.roll(faults.webhook_lost_rate)
        duplicate = self._dice.roll(faults.webhook_duplicate_rate)
        reorder = self._dice.roll(faults.webhook_reorder_rate)
        body = encode(prediction.webhook_payload())
        webhook_id = new_webhook_id()
        if lost:
            self._record(url, webhook_id, prediction, body, sent=False, error="webhook_lost_rate")
            log.info("simulator.webhook.dropped", prediction_id=prediction.id, url=url)
            return
        if faults.webhook_delay_seconds > 0:
            await asyncio.sleep(faults.webhook_delay_seconds)
        await self._post(url, webhook_id, prediction, body)
        if duplicate:
            await self._post(url, webhook_id, prediction, body)
        if reorder:
            stale = prediction.stale_copy()
            await self._post(url, new_webhook_id(), stale, encode(stale.webhook_payload()))

    async def _post(self, url: str, webhook_id: str, prediction: Prediction, body: bytes) -> None:
        if self._client is None:
            raise RuntimeError("the simulator's lifespan has not started (no HTTP client)")
        record = self._record(url, webhook_id, prediction, body)
        headers = signed_headers(self._config.webhook_secret, webhook_id, int(time.time()), body)
        try:
            response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            log.warning("simulator.webhook.failed", url=url, webhook_id=webhook_id,
                        error=record.error)
            return
        record.response_status = response.status_code
        log.debug("simulator.webhook.sent", url=url, webhook_id=webhook_id,
                  status=prediction.status, response_status=response.status_code)

    def _record(
        self,
        url: str,
        webhook_id: str,
        prediction: Prediction,
        body: bytes,
        *,
        sent: bool = True,
        error: str | None = None,
    ) -> WebhookDelivery:
        record = WebhookDelivery(
            url, webhook_id, prediction.id, prediction.status, body.decode(), sent=sent, error=error
        )
        self._log.append(record)
        return record
