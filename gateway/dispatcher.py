"""The dispatcher: takes queued jobs to WaveSpeed, keeps at most ``max_concurrency`` in flight
there, and shares that capacity round-robin between tenants.

A submit is claimed in the store (``submit_attempted_at``) before it is sent, so that after a
crash a job whose submit may have gone out is never sent again: a webhook adopts it, or the
reconciler fails it as ``submit_outcome_unknown`` at the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.jobs import JobService, Transition, transition
from gateway.logs import get_logger
from gateway.states import is_terminal
from gateway.store import Job, Tx
from gateway.upstream import (
    UpstreamNotSent,
    UpstreamOutcomeUnknown,
    UpstreamRateLimited,
    UpstreamRejected,
    WaveSpeedClient,
)

log = get_logger()


class Dispatcher:
    def __init__(
        self,
        service: JobService,
        upstream: WaveSpeedClient,
        *,
        public_url: str,
        max_concurrency: int,
        webhook_grace_seconds: float,
        retry_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._service = service
        self._upstream = upstream
        self._public_url = public_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self._grace = webhook_grace_seconds
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._queues: dict[str, deque[str]] = {}
        self._turns: deque[str] = deque()
        self._queued: set[str] = set()
        self.in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._paused_until = 0.0
        self._stopping = False
        service.accept_listeners.append(self.enqueue)
        service.slots = self
        service.commit_listeners.append(self._on_commit)

    # -- queue -------------------------------------------------------------------------------

    def enqueue(self, job: Job, *, front: bool = False) -> None:
        if job.submit_attempted_at is not None and job.id in self.in_flight:
            self._start(job.id, job)  # accepted with a slot already taken (take_slot)
            return
        if job.id in self._queued or job.id in self.in_flight or self._stopping:
            return
        queue = self._queues.get(job.tenant_id)
        if queue is None:
            queue = self._queues[job.tenant_id] = deque()
            self._turns.append(job.tenant_id)
        if front:
            queue.appendleft(job.id)
        else:
            queue.append(job.id)
        self._queued.add(job.id)
        if len(self.in_flight) < self.max_concurrency:  # else the next free slot wakes it
            self._wake.set()

    @property
    def queued_count(self) -> int:
        return len(self._queued)

    def _next_job(self) -> str | None:
        while self._turns:
            tenant_id = self._turns.popleft()
            queue = self._queues[tenant_id]
            job_id = queue.popleft()
            if queue:
                self._turns.append(tenant_id)
            else:
                del self._queues[tenant_id]
            self._queued.discard(job_id)
            return job_id
        return None

    def _on_commit(self, moved: Transition) -> None:
        if is_terminal(moved.to_status) and moved.job.id in self.in_flight:
            self.in_flight.discard(moved.job.id)
            self._wake.set()

    async def release_finished(self) -> int:
        """Free the slots of jobs counted in flight here that the store says are finished;
        return how many. ``_on_commit`` hears this process's commits only: with several
        worker processes on one database, a job this worker sent may be finished by another
        (WaveSpeed's webhook, or a poll, lands on any of them), and one that started after a
        restart counts the jobs every worker had in flight. Without this their slots would
        stay taken, and the worker would stop sending."""
        counted = list(self.in_flight)
        if not counted:
            return 0
        statuses = await self._service.store.job_statuses(counted)
        # A job missing from the store holds its slot: its accepting commit is still running.
        finished = [i for i in counted if i in statuses and is_terminal(statuses[i])]
        for job_id in finished:
            self.in_flight.discard(job_id)
        if finished:
            self._wake.set()
        return len(finished)

    async def take_unsent(self) -> None:
        """With slots free and nothing queued here, queue jobs no worker has sent yet: with
        several workers, those another worker accepted while its own slots are taken. The
        store is the queue the workers share; the claim decides which one sends a job (the
        other finds it claimed and frees the slot). ``enqueue`` skips those already here."""
        free = self.max_concurrency - len(self.in_flight)
        if free <= 0 or self._queued or self._stopping:
            return
        for job in await self._service.store.unsent_jobs(free):
            self.enqueue(job)

    async def share_work_every(self, seconds: float) -> None:
        """Every ``seconds``, until the dispatcher stops: ``release_finished``, then
        ``take_unsent``: what several workers on one database learn from each other."""
        while not self._stopping:
            await asyncio.sleep(seconds)
            try:
                await self.release_finished()
                await self.take_unsent()
            except Exception:
                log.exception("dispatcher_share_failed")

    # -- lifecycle ---------------------------------------------------------------------------

    async def recover(self) -> None:
        """Rebuild the queue and the in-flight set from the store (start-up after a crash)."""
        jobs = await self._service.store.jobs_in_status(("queued", "submitted", "processing"))
        for job in jobs:
            if job.status == "queued" and job.submit_attempted_at is None:
                self.enqueue(job)
            else:
                self.in_flight.add(job.id)
        log.info("dispatcher_recovered", queued=len(self._queued), in_flight=len(self.in_flight))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        resume: asyncio.TimerHandle | None = None
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            pause = self._paused_until - loop.time()
            if pause > 0:
                if resume is None or resume.when() < self._paused_until:  # one timer at a time
                    resume = loop.call_at(self._paused_until, self._wake.set)
                continue
            while len(self.in_flight) < self.max_concurrency and not self._stopping:
                job_id = self._next_job()
                if job_id is None:
                    break
                self.in_flight.add(job_id)
                self._start(job_id)

    async def stop(self, grace_seconds: float) -> None:
        """Stop taking work; let submits already sent finish within the grace period."""
        self._stopping = True
        self._wake.set()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- one submit --------------------------------------------------------------------------

    def take_slot(self, job_id: str) -> bool:
        """For the accepting transaction: a free slot, when no job is waiting for one (they go
        first) and WaveSpeed has not asked us to back off. The job is then accepted already
        claimed, and sent as soon as it is committed: one commit less on every job's path."""
        if (
            self._stopping
            or self._queued
            or len(self.in_flight) >= self.max_concurrency
            or self._paused_until > asyncio.get_running_loop().time()
        ):
            return False
        self.in_flight.add(job_id)
        return True

    def give_back(self, job_id: str) -> None:
        """The accepting transaction did not commit the job: free its slot."""
        self._release(job_id)

    def _start(self, job_id: str, job: Job | None = None) -> None:
        work = self._send(job) if job is not None else self._claim_and_send(job_id)
        task = asyncio.create_task(work, name=f"submit-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim_and_send(self, job_id: str) -> None:
        try:
            job = await self._service.store.write(self._claim(job_id))
        except Exception:
            log.exception("submit_claim_failed", job_id=job_id)
            job = None
        if job is None:
            self._release(job_id)
            return
        await self._send(job)

    async def _send(self, job: Job) -> None:
        job_id = job.id
        try:
            webhook = f"{self._public_url}/webhooks/wavespeed/{job.id}"
            try:
                prediction = await self._upstream.submit(job.wavespeed_id, job.inputs, webhook)
            except UpstreamRateLimited as exc:
                await self._hand_back(job, exc.retry_after, "upstream_rate_limited")
            except UpstreamNotSent:
                await self._hand_back(job, self._retry_seconds, "upstream_unreachable")
            except UpstreamRejected as exc:
                await self._service.fail(
                    job.id, "upstream_rejected", exc.message, "dispatcher",
                    detail={"upstream_status": exc.upstream_status},
                )
            except UpstreamOutcomeUnknown as exc:
                # Never re-sent: a webhook adopts it, or the reconciler fails it at the deadline.
                log.warning("submit_outcome_unknown", job_id=job.id, error=exc.message)
            else:
                # Not waited on to reach the disk: nobody is told of this commit (no callback
                # event), and the claim it follows was durable. A power cut that takes it
                # leaves the job claimed with its outcome unknown, which WaveSpeed's webhook
                # adopts (or the reconciler fails at the deadline); and the commit that
                # records that webhook is durable, so it takes this one to disk first.
                await self._service.run_transitions(
                    self._submitted(job.id, prediction.id), durable=False
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("submit_crashed", job_id=job_id)
            self._release(job_id)

    def _release(self, job_id: str) -> None:
        self.in_flight.discard(job_id)
        self._wake.set()

    async def _hand_back(self, job: Job, delay: float, reason: str) -> None:
        """The submit was not created upstream: unclaim it, pause, and queue it again."""
        loop = asyncio.get_running_loop()
        self._paused_until = max(self._paused_until, loop.time() + delay)
        job_id = job.id

        def script(tx: Tx) -> None:
            tx.update_job(job_id, submit_attempted_at=None)

        await self._service.store.write(script)
        log.info("submit_handed_back", job_id=job.id, reason=reason, retry_in=delay)
        self.in_flight.discard(job.id)
        current = await self._service.store.get_job(job.id)
        if current is not None and current.status == "queued":
            self.enqueue(current, front=True)
        self._wake.set()

    def _claim(self, job_id: str) -> Callable[[Tx], Job | None]:
        now = self._clock()

        def script(tx: Tx) -> Job | None:
            job = tx.get_job(job_id)
            if job is None or job.status != "queued" or job.submit_attempted_at is not None:
                return None
            tx.update_job(job_id, submit_attempted_at=now)
            job.submit_attempted_at = now
            return job

        return script

    def _submitted(
        self, job_id: str, upstream_id: str
    ) -> Callable[[Tx], tuple[None, list[Transition]]]:
        now = self._clock()
        hooks = tuple(self._service.transition_hooks)
        next_poll = now + self._grace

        def script(tx: Tx) -> tuple[None, list[Transition]]:
            job = tx.get_job(job_id)
            if job is None:
                return None, []
            fields: dict[str, Any] = {}
            if job.upstream_id is None:  # else a webhook adopted the job already
                fields.update(upstream_id=upstream_id, next_poll_at=next_poll)
            if job.status != "queued":  # moved on meanwhile (cancelled, adopted, ended)
                if fields:
                    tx.update_job(job_id, **fields)
                return None, []
            fields.update(submitted_at=now, next_poll_at=next_poll)
            moved = transition(
                tx, job, "submitted", "dispatcher", now, hooks,
                detail={"upstream_id": upstream_id}, **fields,
            )
            return None, [moved] if moved else []

        return script
