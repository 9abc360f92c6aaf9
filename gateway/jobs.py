"""The job service: accepting jobs, the one ``transition`` function that enforces the state
graph (gateway.states), and applying what WaveSpeed reports (webhooks and polls).

Writes are transaction scripts run by the store. Work that must be atomic with a transition
(settling cost, writing a callback to the outbox) registers a ``TransitionHook``, which runs
inside the same transaction; work that must follow the commit (waking waiters, freeing a
dispatcher slot) registers a ``CommitListener``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from gateway.catalog import Catalog
from gateway.errors import Conflict, FieldError, InvalidRequest, NotFound, QuotaExceeded, UpstreamError
from gateway.ids import new_id
from gateway.logs import get_logger
from gateway.normalize import JobRequest, parse_job_request
from gateway.states import TERMINAL, can_transition, is_terminal
from gateway.store import Idempotency, Job, JobEvent, Store, Tx
from gateway.tenancy import Principal
from gateway.upstream import Prediction, UpstreamRejected, WaveSpeedClient

log = get_logger()

MAX_IDEMPOTENCY_KEY = 255
# WaveSpeed's answers to an upload that mean the image itself is unacceptable.
_IMAGE_REFUSALS = frozenset({400, 413, 415, 422})


class SubmitSlots(Protocol):
    """The dispatcher's capacity, offered to the accepting transaction (gateway.dispatcher)."""

    def take_slot(self, job_id: str) -> bool: ...
    def give_back(self, job_id: str) -> None: ...


@dataclass(frozen=True)
class Transition:
    job: Job
    from_status: str | None
    to_status: str
    source: str
    at: float


TransitionHook = Callable[[Tx, Transition], None]
CommitListener = Callable[[Transition], None]
AcceptHook = Callable[[Tx, Job, Principal], None]
# Checks that need I/O (e.g. resolving a callback URL's host) run before the transaction.
AcceptCheck = Callable[[Principal, JobRequest], Awaitable[None]]


def first_event(job: Job) -> JobEvent:
    """The event every job starts with: queued by the API when it was accepted."""
    return JobEvent(1, None, "queued", "api", job.created_at, None)


def transition(
    tx: Tx,
    job: Job,
    to: str,
    source: str,
    at: float,
    hooks: tuple[TransitionHook, ...] = (),
    detail: dict[str, Any] | None = None,
    **fields: Any,
) -> Transition | None:
    """Move ``job`` to ``to`` if the graph allows it; record the event; run the in-transaction
    hooks. A refused transition changes nothing, is logged, and returns None."""
    current = job.status
    if not can_transition(current, to):
        log.warning(
            "transition_refused", job_id=job.id, from_status=current, to_status=to, source=source
        )
        return None
    changes: dict[str, Any] = {"status": to, "updated_at": at, **fields}
    if to in TERMINAL:
        changes["finished_at"] = at
        changes["cost_micros"] = job.price_micros if to == "completed" else 0
    tx.update_job(job.id, **changes)
    tx.insert_event(job.id, current, to, source, at, detail)
    moved = Transition(replace(job, **changes), current, to, source, at)
    for hook in hooks:
        hook(tx, moved)
    return moved


# WaveSpeed's statuses -> ours. Unknown values are treated as still in flight.
_UPSTREAM_STATUS: dict[str, str] = {
    "created": "submitted", "pending": "submitted", "queued": "submitted",
    "processing": "processing", "running": "processing",
    "completed": "completed", "succeeded": "completed",
    "failed": "failed", "error": "failed", "cancelled": "failed", "canceled": "failed",
    "timeout": "failed",
}

ApplyResult = Literal["applied", "unchanged", "stale", "duplicate", "unknown_job", "mismatch"]


@dataclass(frozen=True)
class Applied:
    result: ApplyResult
    transition: Transition | None = None
    job: Job | None = None


class Watcher:
    """One request waiting for a job: its future ends with the job as the commit that made
    it terminal left it, or with None (time is up, or the gateway is shutting down)."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Job | None] = asyncio.get_running_loop().create_future()

    def end(self, job: Job | None) -> None:
        if not self.future.done():
            self.future.set_result(job)


class JobWatch:
    """Wakes requests waiting for a job to end (``wait`` on POST /v1/jobs)."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[Watcher]] = {}
        self.closed = False

    def close(self) -> None:
        """Shutting down: wake every waiter now (they answer with the job as it is)."""
        self.closed = True
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.end(None)

    @contextmanager
    def watching(self, job_id: str) -> Iterator[Watcher]:
        watcher = Watcher()
        self._watchers.setdefault(job_id, set()).add(watcher)
        try:
            yield watcher
        finally:
            watchers = self._watchers.get(job_id)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[job_id]

    def notify(self, job: Job) -> None:
        """``job`` has just been committed in a terminal state."""
        for watcher in self._watchers.get(job.id, ()):
            watcher.end(job)


@dataclass
class JobService:
    store: Store
    catalog: Catalog
    upstream: WaveSpeedClient
    clock: Callable[[], float] = time.time
    idempotency_ttl: float = 24 * 3600
    webhook_grace_seconds: float = 60.0
    transition_hooks: list[TransitionHook] = field(default_factory=list)
    accept_hooks: list[AcceptHook] = field(default_factory=list)
    accept_checks: list[AcceptCheck] = field(default_factory=list)
    commit_listeners: list[CommitListener] = field(default_factory=list)
    accept_listeners: list[Callable[[Job], None]] = field(default_factory=list)
    quota_listeners: list[Callable[[str, str], None]] = field(default_factory=list)
    slots: SubmitSlots | None = None
    watch: JobWatch = field(default_factory=JobWatch)

    # -- accepting ---------------------------------------------------------------------------

    async def create_job(
        self, principal: Principal, body: Any, idempotency_key: str | None
    ) -> tuple[Job, bool]:
        """Validate a ``POST /v1/jobs`` body, then ``accept`` it. Returns (job, created)."""
        return await self.accept(principal, parse_job_request(body), idempotency_key)

    async def accept(
        self, principal: Principal, request: JobRequest, idempotency_key: str | None
    ) -> tuple[Job, bool]:
        """Upload data: images, store the job as queued; every surface's requests end here
        (the accept hooks, e.g. quotas, apply to all of them). Returns (job, created)."""
        tenant_id = principal.tenant.id
        if idempotency_key is not None:
            _check_idempotency_key(idempotency_key)
            existing = await self._replay(tenant_id, idempotency_key, request.fingerprint)
            if existing is not None:
                return existing, False
        for check in self.accept_checks:
            await check(principal, request)
        image_urls = await self._upload_images(request)
        job = self._new_job(principal, request, image_urls)
        slots = self.slots
        claimed = slots is not None and slots.take_slot(job.id)
        if claimed:
            job.submit_attempted_at = job.created_at
        hooks = tuple(self.accept_hooks)
        ttl = self.idempotency_ttl

        def script(tx: Tx) -> tuple[Job, bool]:
            if idempotency_key is not None:
                record = tx.get_idempotency(tenant_id, idempotency_key)
                if record is not None and record.created_at > job.created_at - ttl:
                    if record.fingerprint != request.fingerprint:
                        raise _idempotency_conflict()
                    original = tx.get_job(record.job_id)
                    if original is not None:
                        return original, False
                tx.put_idempotency(
                    tenant_id, idempotency_key,
                    Idempotency(request.fingerprint, job.id, job.created_at),
                )
            for hook in hooks:
                hook(tx, job, principal)
            tx.insert_job(job)
            event = first_event(job)
            tx.insert_event(
                job.id, event.from_status, event.to_status, event.source, event.at, event.detail,
                seq=event.seq,
            )
            return job, True

        def settled(ok: bool, value: Any) -> None:
            # Run by the store as soon as the outcome is known, before this request resumes
            # and whether or not it still waits: a committed job goes to the dispatcher at
            # once, and a claimed slot is never lost.
            created = ok and value[1]
            if claimed and slots is not None and not created:
                slots.give_back(job.id)
            if created:
                _tell_each(self.accept_listeners, value[0], job.id, "accept_listener_failed")

        try:
            stored, created = await self.store.write(script, settled=settled)
        except QuotaExceeded as exc:
            for quota_listener in self.quota_listeners:
                quota_listener(tenant_id, exc.limit)
            raise
        return stored, created

    async def _replay(self, tenant_id: str, key: str, fingerprint: str) -> Job | None:
        record = await self.store.get_idempotency(tenant_id, key)
        if record is None or record.created_at <= self.clock() - self.idempotency_ttl:
            return None
        if record.fingerprint != fingerprint:
            raise _idempotency_conflict()
        return await self.store.get_job(record.job_id)

    async def _upload_images(self, request: JobRequest) -> list[str]:
        urls: list[str] = []
        for index, image in enumerate(request.images):
            if image.url is not None:
                urls.append(image.url)
                continue
            assert image.content is not None and image.content_type is not None
            extension = image.content_type.split("/", 1)[1].split("+", 1)[0]
            try:
                urls.append(
                    await self.upstream.upload_binary(
                        f"image-{index}.{extension}", image.content, image.content_type
                    )
                )
            except UpstreamRejected as exc:
                if exc.upstream_status not in _IMAGE_REFUSALS:
                    raise UpstreamError(
                        f"could not upload images[{index}] to WaveSpeed: {exc.message}",
                        code="upload_failed",
                    ) from exc
                # The image itself was refused (too large, not an image): the client's to fix.
                raise InvalidRequest(
                    [FieldError(f"images[{index}]", f"WaveSpeed refused the upload: {exc.message}")]
                ) from exc
            except UpstreamError as exc:
                raise UpstreamError(
                    f"could not upload images[{index}] to WaveSpeed: {exc.message}",
                    code="upload_failed",
                ) from exc
        return urls

    def _new_job(self, principal: Principal, request: JobRequest, image_urls: list[str]) -> Job:
        now = self.clock()
        endpoint = request.endpoint
        return Job(
            id=new_id("job"),
            tenant_id=principal.tenant.id,
            model=endpoint.model,
            task=endpoint.task,
            wavespeed_id=endpoint.wavespeed_id,
            status="queued",
            inputs=request.upstream_body(image_urls),
            price_micros=self.catalog.price_micros(endpoint),
            created_at=now,
            updated_at=now,
            callback_url=request.callback_url,
            metadata=request.metadata,
            surface=request.surface,
        )

    # -- reading -----------------------------------------------------------------------------

    async def get_job(self, tenant_id: str | None, job_id: str) -> Job:
        job = await self.store.get_job(job_id)
        if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
            raise NotFound(f"no job {job_id}", code="job_not_found")
        return job

    async def get_events(self, job_id: str) -> list[JobEvent]:
        return await self.store.get_events(job_id)

    async def wait_terminal(self, job: Job, seconds: float) -> Job:
        """Hold until the job is terminal or ``seconds`` pass; re-read at least every second
        (another process may have finished it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not is_terminal(job.status) and not self.watch.closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            with self.watch.watching(job.id) as watcher:
                fresh = await self.store.get_job(job.id)
                if fresh is not None:
                    job = fresh
                if is_terminal(job.status):
                    break
                # A timer rather than asyncio.wait_for: the commit's wake-up reaches this
                # request in one step of the loop instead of three.
                timer = loop.call_later(min(remaining, 1.0), watcher.end, None)
                try:
                    ended = await watcher.future
                finally:
                    timer.cancel()
            if ended is not None:  # ended here: the committed job came with the wake-up
                return ended
            fresh = await self.store.get_job(job.id)
            if fresh is not None:
                job = fresh
        return job

    # -- changing ----------------------------------------------------------------------------

    async def run_transitions(self, script: Callable[[Tx], Any], *, durable: bool = True) -> Any:
        """Run a script that returns (value, [Transition...]); the listeners hear of the
        transitions as soon as they are committed (before this caller resumes, and even if
        it has stopped waiting). ``durable``: see ``Store.write``."""
        value, _ = await self.store.write(script, durable=durable, settled=self._committed)
        return value

    def _committed(self, ok: bool, value: Any) -> None:
        if not ok:
            return
        for item in value[1]:
            if is_terminal(item.to_status):
                self.watch.notify(item.job)
            _tell_each(self.commit_listeners, item, item.job.id, "commit_listener_failed")

    async def cancel_job(self, tenant_id: str | None, job_id: str, source: str = "api") -> Job:
        now = self.clock()
        hooks = tuple(self.transition_hooks)

        def script(tx: Tx) -> tuple[Job, list[Transition]]:
            job = tx.get_job(job_id)
            if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
                raise NotFound(f"no job {job_id}", code="job_not_found")
            if is_terminal(job.status):
                raise Conflict(f"job is already {job.status}", code="job_terminal")
            moved = transition(tx, job, "cancelled", source, now, hooks)
            assert moved is not None
            return moved.job, [moved]

        job: Job = await self.run_transitions(script)
        return job

    async def fail(
        self, job_id: str, code: str, message: str, source: str, detail: dict[str, Any] | None = None
    ) -> Transition | None:
        now = self.clock()
        hooks = tuple(self.transition_hooks)

        def script(tx: Tx) -> tuple[Transition | None, list[Transition]]:
            job = tx.get_job(job_id)
            if job is None:
                return None, []
            moved = transition(
                tx, job, "failed", source, now, hooks,
                detail={"error_code": code, **(detail or {})},
                error_code=code, error_message=message,
            )
            return moved, [moved] if moved else []

        result: Transition | None = await self.run_transitions(script)
        return result

    async def apply_prediction(
        self, job_id: str, prediction: Prediction, source: str, webhook_id: str | None = None
    ) -> Applied:
        """Apply what WaveSpeed says of a job (a webhook body or a polled result)."""
        now = self.clock()
        grace = self.webhook_grace_seconds
        hooks = tuple(self.transition_hooks)

        def script(tx: Tx) -> tuple[Applied, list[Transition]]:
            job = tx.get_job(job_id)
            if job is None:
                return Applied("unknown_job"), []
            if job.upstream_id is not None and job.upstream_id != prediction.id:
                return Applied("mismatch", job=job), []
            target = _UPSTREAM_STATUS.get(prediction.status, "submitted")
            if webhook_id is not None and not tx.insert_receipt(
                webhook_id, job_id, now, prediction.status, "received"
            ):
                return Applied("duplicate", job=job), []
            fields: dict[str, Any] = {"last_heard_at": now}
            if job.upstream_id is None:
                fields["upstream_id"] = prediction.id
                fields["submitted_at"] = now
                if target not in TERMINAL and job.next_poll_at is None:
                    # Adopted with no submit answer to start the grace: it counts from the
                    # attempt, so the reconciler polls if the terminal webhook is lost too.
                    fields["next_poll_at"] = (job.submit_attempted_at or now) + grace
            if target == job.status or (target == "submitted" and job.status == "processing"):
                tx.update_job(job.id, **fields)
                return Applied("unchanged", job=replace(job, **fields)), []
            detail: dict[str, Any] = {"upstream_status": prediction.status}
            if job.upstream_id is None:
                detail["adopted_upstream_id"] = prediction.id
            if target == "completed":
                fields.update(
                    outputs=prediction.outputs,
                    has_nsfw_contents=prediction.has_nsfw_contents,
                    upstream_timings=prediction.timings or None,
                )
            elif target == "failed":
                code = {"timeout": "upstream_timeout", "cancelled": "upstream_cancelled",
                        "canceled": "upstream_cancelled"}.get(prediction.status, "upstream_failed")
                fields.update(
                    error_code=code,
                    error_message=prediction.error or f"WaveSpeed reported {prediction.status}",
                )
                detail["error"] = fields["error_message"]
            moved = transition(tx, job, target, source, now, hooks, detail=detail, **fields)
            if moved is None:
                tx.update_job(job.id, last_heard_at=now)
                return Applied("stale", job=job), []
            return Applied("applied", moved, moved.job), [moved]

        result: Applied = await self.run_transitions(script)
        return result


def _tell_each(listeners: list[Callable[[Any], None]], news: Any, job_id: str, failed: str) -> None:
    """Call every listener with ``news``; one that raises is logged, the others still hear."""
    for listener in listeners:
        try:
            listener(news)
        except Exception:
            log.exception(failed, job_id=job_id)


def _idempotency_conflict() -> Conflict:
    return Conflict(
        "Idempotency-Key was used with a different request body", code="idempotency_conflict"
    )


def _check_idempotency_key(key: str) -> None:
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidRequest(
            [FieldError("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters")]
        )
