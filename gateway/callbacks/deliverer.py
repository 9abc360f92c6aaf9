"""The deliverer: sends the outbox's due messages to tenants, records every attempt, and
schedules the next one or gives up (dead letter).

- Claimed in the store before sending (a lease: ``next_attempt_at`` moves to the lease's end
  and ``claim_token`` marks it), so two processes never send the same attempt at once, and a
  crash mid-attempt only delays the message until the lease runs out.
- At most ``per_endpoint`` attempts in flight per endpoint (a slow tenant holds up only
  itself) and ``max_concurrency`` in all.
- One attempt: the URL is resolved and checked again (gateway.callbacks.urls) and the
  connection goes to an address that passed; the whole attempt is bounded by ``timeout``;
  success is a 2xx and nothing else (redirects are not followed); ``Retry-After`` is
  honoured; a 410 disables the endpoint and dead-letters what was pending for it.
- Woken by commits that wrote messages (``on_commit``) and by redeliveries; otherwise it looks
  every ``poll_seconds`` (other processes, and the retry schedule).
- Hourly, delivered and dead messages older than ``retention_seconds`` are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.callbacks import signing
from gateway.callbacks.outbox import event_type
from gateway.callbacks.retry import RetryPolicy
from gateway.callbacks.urls import CallbackUrlPolicy, CallbackUrlRefused, CheckedUrl, literal_address
from gateway.ids import id_floor
from gateway.jobs import Transition
from gateway.logs import get_logger
from gateway.store import Store, Tx
from gateway.store.callbacks import WebhookAttempt, WebhookMessage
from gateway.times import parse_retry_after
from gateway.webhooks import wavespeed_signature

log = get_logger()

# A claim outlives the attempt's own timeout by this much (or by the timeout, if shorter), to
# leave time for recording the result before another process may take the message over.
LEASE_MARGIN_SECONDS = 5.0
RESPONSE_SNIPPET_BYTES = 1024
PRUNE_EVERY_SECONDS = 3600.0
PRUNE_BATCH = 1000
USER_AGENT = "kontext-gateway-callbacks/1"

ResultListener = Callable[[str, float | None], None]  # (result, lag seconds of a delivery)


@dataclass(frozen=True)
class Delivery:
    """A claimed message and what sending it needs, read in the claiming transaction."""

    message: WebhookMessage
    url: str
    secrets: list[str]
    token: str
    # "wavespeed": a ?webhook= of the WaveSpeed-compatible surface, signed as WaveSpeed signs.
    style: str = "standard"


@dataclass(frozen=True)
class Outcome:
    started_at: float
    latency_ms: int
    status_code: int | None = None
    error: str | None = None
    response: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def summary(self) -> str:
        return self.error or f"HTTP {self.status_code}"


class Deliverer:
    def __init__(
        self,
        store: Store,
        policy: CallbackUrlPolicy,
        retry: RetryPolicy,
        *,
        timeout: float = 15.0,
        max_concurrency: int = 64,
        per_endpoint: int = 4,
        poll_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        on_result: ResultListener = lambda result, lag: None,
        transport: httpx.AsyncBaseTransport | None = None,
        retention_seconds: float | None = None,
    ) -> None:
        self.store = store
        self._policy = policy
        self._retry = retry
        self._timeout = timeout
        self._max = max_concurrency
        self._per_endpoint = per_endpoint
        self._poll = poll_seconds
        self._clock = clock
        self._on_result = on_result
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: dict[asyncio.Task[None], Delivery] = {}
        self._retention = retention_seconds
        self._next_prune = 0.0  # monotonic; the first pass prunes

    # -- waking ------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def on_commit(self, moved: Transition) -> None:
        """A ``CommitListener``: a transition that raised an event has messages to send."""
        if event_type(moved.to_status) is not None:
            self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until stopped; the first pass picks up whatever a previous run left."""
        self._client = httpx.AsyncClient(
            transport=self._transport or httpx.AsyncHTTPTransport(retries=0),
            timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 5.0)),
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would bypass the address checks
        )
        while not self._stopping:
            self._wake.clear()
            try:
                await self._prune_when_due()
                wait = await self._claim_due()
            except Exception:
                log.exception("callback_claim_failed")
                wait = self._poll
            if wait > 0:
                # Woken by a commit, a finished attempt, or this timer (cheaper than
                # asyncio.wait_for, which makes a task per wait: one per terminal job).
                timer = asyncio.get_running_loop().call_later(wait, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()

    async def stop(self, grace_seconds: float) -> None:
        """Stop claiming; let attempts in flight finish within the grace period; hand the
        rest back (their claims released) so the next start sends them at once."""
        self._stopping = True
        self._wake.set()
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=grace_seconds)
            unfinished = [self._in_flight[task] for task in pending]
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if unfinished:
                with contextlib.suppress(Exception):
                    await self.store.write(_release(unfinished, self._clock()))
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- retention ---------------------------------------------------------------------------

    async def _prune_when_due(self) -> None:
        if self._retention is None or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
        pruned = await self.prune(self._clock() - self._retention)
        if pruned:
            log.info("callbacks_pruned", messages=pruned)

    async def prune(self, before: float) -> int:
        """Delete delivered and dead messages created before ``before``, a batch per
        transaction so that other writes interleave."""
        bound = id_floor("msg", before)
        total = 0
        while True:
            count = await self.store.write(
                lambda tx: tx.prune_webhook_messages(bound, PRUNE_BATCH)
            )
            total += count
            if count < PRUNE_BATCH:
                return total

    # -- claiming ----------------------------------------------------------------------------

    async def _claim_due(self) -> float:
        """Claim and start what is due; return how long to sleep before looking again."""
        due = await self.store.next_webhook_due()
        now = self._clock()
        free = self._max - len(self._in_flight)
        if free <= 0 or due is None or due > now:
            return self._until(due, now, claimed=0)
        deliveries, dead = await self.store.write(self._claim(now, free))
        for _ in range(dead):
            self._on_result("dead_lettered", None)
        if self._stopping:  # stop() began while we were claiming: hand these straight back
            await self.store.write(_release(deliveries, self._clock()))
            return 0.0
        for delivery in deliveries:
            task = asyncio.create_task(
                self.deliver_callback(delivery), name=f"callback-{delivery.message.id}"
            )
            self._in_flight[task] = delivery
            task.add_done_callback(self._finished)
        # The claim moved what was due: read the next due time again.
        return self._until(await self.store.next_webhook_due(), self._clock(), len(deliveries))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._wake.set()

    def _until(self, due: float | None, now: float, claimed: int) -> float:
        if due is None:
            return self._poll
        delay = due - now
        if delay <= 0:
            # Due but not claimable now (endpoints at their limit, or we are full): a finished
            # attempt wakes us; otherwise look again after the poll interval.
            return 0.0 if claimed and len(self._in_flight) < self._max else self._poll
        return min(delay, self._poll)

    def _claim(self, now: float, limit: int) -> Callable[[Tx], tuple[list[Delivery], int]]:
        token = secrets.token_hex(8)
        lease_until = now + self._timeout + min(LEASE_MARGIN_SECONDS, self._timeout)
        per_endpoint = self._per_endpoint

        def script(tx: Tx) -> tuple[list[Delivery], int]:
            deliveries: list[Delivery] = []
            dead = 0
            for message in tx.claim_webhook_messages(now, lease_until, limit, per_endpoint, token):
                if message.endpoint_id is None:
                    tenant = tx.get_tenant(message.tenant_id)
                    if tenant is not None:
                        deliveries.append(Delivery(
                            message, message.url, [tenant.webhook_secret], token, message.style,
                        ))
                        continue
                    reason = "tenant not found"
                else:
                    endpoint = tx.get_webhook_endpoint(message.endpoint_id)
                    if endpoint is not None and endpoint.enabled:
                        deliveries.append(
                            Delivery(message, endpoint.url, endpoint.signing_secrets(now), token)
                        )
                        continue
                    reason = "endpoint disabled"
                    if endpoint is not None and endpoint.disabled_reason:
                        reason += f": {endpoint.disabled_reason}"
                tx.update_webhook_message(
                    message.id, status="dead", dead_at=now, next_attempt_at=None,
                    claim_token=None, last_error=reason,
                )
                dead += 1
            return deliveries, dead

        return script

    # -- one attempt -------------------------------------------------------------------------

    async def deliver_callback(self, delivery: Delivery) -> None:
        """Send one attempt of a claimed message and record what came of it. Should recording
        fail, the claim's lease runs out and the message is sent again: never lost."""
        message = delivery.message
        try:
            outcome = await self._attempt(delivery)
            results = await self.store.write(self._record(delivery, outcome, self._clock()))
        except Exception:
            log.exception("callback_attempt_crashed", message_id=message.id)
            return
        log.info(
            "callback_attempt", message_id=message.id, endpoint_id=message.endpoint_id,
            job_id=message.job_id, event_type=message.event_type, status_code=outcome.status_code,
            error=outcome.error, latency_ms=outcome.latency_ms, results=[r for r, _ in results],
        )
        for result, lag in results:
            self._on_result(result, lag)

    async def _attempt(self, delivery: Delivery) -> Outcome:
        started = self._clock()
        t0 = time.monotonic()

        def failed(error: str) -> Outcome:
            return Outcome(started, int((time.monotonic() - t0) * 1000), error=error)

        try:
            async with asyncio.timeout(self._timeout):
                checked = await self._policy.check(delivery.url)
                body = delivery.message.payload.encode()
                message_id, timestamp = delivery.message.id, int(self._clock())
                if delivery.style == "wavespeed":
                    headers = wavespeed_signature.signed_headers(
                        delivery.secrets[0], message_id, timestamp, body
                    )
                else:
                    headers = signing.signed_headers(delivery.secrets, message_id, timestamp, body)
                headers.update({"content-type": "application/json", "user-agent": USER_AGENT})
                response = await self._send(checked, headers, body)
        except CallbackUrlRefused as exc:
            return failed(f"callback URL {exc}")
        except TimeoutError:
            return failed(f"no answer within {self._timeout:g} s")
        except httpx.HTTPError as exc:
            return failed(_describe(exc))
        except Exception as exc:  # unforeseen: still a failed attempt, so the schedule ends
            log.exception("callback_attempt_failed_unexpectedly", message_id=delivery.message.id)
            return failed(f"could not send: {type(exc).__name__}")
        status, snippet, retry_after = response
        return Outcome(
            started, int((time.monotonic() - t0) * 1000), status_code=status, response=snippet,
            retry_after=parse_retry_after(retry_after, self._clock()),
        )

    async def _send(
        self, checked: CheckedUrl, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, str | None]:
        """POST to the first checked address that accepts a connection; the Host header and
        the TLS server name stay the URL's own."""
        assert self._client is not None, "the deliverer is not running"
        url = httpx.URL(checked.url)
        headers["host"] = url.netloc.decode("ascii")
        extensions: dict[str, Any] = {}
        if url.scheme == "https" and literal_address(checked.host) is None:
            extensions["sni_hostname"] = checked.host
        for index, address in enumerate(checked.addresses):
            pinned = url.copy_with(host=str(address))
            try:
                async with self._client.stream(
                    "POST", pinned, content=body, headers=headers, extensions=extensions
                ) as response:
                    snippet = b""
                    async for chunk in response.aiter_bytes():
                        snippet += chunk
                        if len(snippet) >= RESPONSE_SNIPPET_BYTES:
                            break
                    text = snippet[:RESPONSE_SNIPPET_BYTES].decode("utf-8", "replace")
                    return response.status_code, text, response.headers.get("retry-after")
            except httpx.ConnectError:
                if index == len(checked.addresses) - 1:
                    raise
        raise AssertionError("unreachable: a checked URL has at least one address")

    def _record(
        self, delivery: Delivery, outcome: Outcome, now: float
    ) -> Callable[[Tx], list[tuple[str, float | None]]]:
        retry = self._retry

        def script(tx: Tx) -> list[tuple[str, float | None]]:
            message = tx.get_webhook_message(delivery.message.id)
            if message is None:  # its endpoint was deleted meanwhile
                return []
            seq = message.attempts + 1
            tx.insert_webhook_attempt(WebhookAttempt(
                message_id=message.id, seq=seq, at=outcome.started_at,
                latency_ms=outcome.latency_ms, status_code=outcome.status_code,
                error=outcome.error, response=outcome.response,
            ))
            changes: dict[str, Any] = {"attempts": seq}
            if message.claim_token != delivery.token or message.status != "pending":
                # Our lease ran out and another claim owns the message now: log only.
                tx.update_webhook_message(message.id, **changes)
                return [("delivered", None)] if outcome.ok else [("failed_attempt", None)]
            changes["claim_token"] = None
            if outcome.ok:
                changes.update(
                    status="delivered", delivered_at=now, next_attempt_at=None, last_error=None
                )
                tx.update_webhook_message(message.id, **changes)
                return [("delivered", now - message.event_at)]
            results: list[tuple[str, float | None]] = [("failed_attempt", None)]
            failures = message.round_attempts + 1
            changes.update(round_attempts=failures, last_error=outcome.summary)
            gone = outcome.status_code == 410
            delay = None if gone else retry.next_delay(failures, outcome.retry_after)
            if delay is None:
                changes.update(status="dead", dead_at=now, next_attempt_at=None)
                results.append(("dead_lettered", None))
            else:
                changes["next_attempt_at"] = now + delay
            tx.update_webhook_message(message.id, **changes)
            if gone and message.endpoint_id is not None:
                reason = "the endpoint answered 410 Gone"
                tx.update_webhook_endpoint(
                    message.endpoint_id, enabled=False, disabled_reason=reason, updated_at=now
                )
                results.append(("disabled", None))
                swept = tx.dead_letter_pending(message.endpoint_id, now, f"endpoint disabled: {reason}")
                results.extend(("dead_lettered", None) for _ in range(swept))
            return results

        return script


def _release(deliveries: list[Delivery], now: float) -> Callable[[Tx], None]:
    def script(tx: Tx) -> None:
        for delivery in deliveries:
            message = tx.get_webhook_message(delivery.message.id)
            if message is not None and message.claim_token == delivery.token:
                tx.update_webhook_message(message.id, claim_token=None, next_attempt_at=now)

    return script


def _describe(exc: httpx.HTTPError) -> str:
    kinds: dict[type[httpx.HTTPError], str] = {
        httpx.ConnectError: "connection failed",
        httpx.ConnectTimeout: "connection timed out",
        httpx.ReadTimeout: "no answer in time",
        httpx.RemoteProtocolError: "the connection broke",
    }
    kind = kinds.get(type(exc), type(exc).__name__)
    detail = str(exc)
    return f"{kind}: {detail[:200]}" if detail else kind
