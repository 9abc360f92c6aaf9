"""The reconciler: what WaveSpeed's webhooks fail to tell us, it finds out.

- A job at WaveSpeed whose webhook is overdue (``next_poll_at`` passed: the grace period after
  the submit's answer, then every poll interval) is polled and the answer applied.
- A submit whose outcome is unknown and that no webhook adopted by the deadline fails as
  ``submit_outcome_unknown``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.errors import UpstreamError
from gateway.jobs import JobService
from gateway.logs import get_logger
from gateway.store import Job, Tx
from gateway.upstream import UpstreamRejected, WaveSpeedClient

log = get_logger()


class Reconciler:
    def __init__(
        self,
        service: JobService,
        upstream: WaveSpeedClient,
        *,
        poll_interval_seconds: float,
        submit_deadline_seconds: float,
        tick_seconds: float = 1.0,
        concurrency: int = 8,
        batch: int = 200,
        clock: Callable[[], float] = time.time,
        on_poll: Callable[[str], None] | None = None,
    ) -> None:
        self._service = service
        self._upstream = upstream
        self._interval = poll_interval_seconds
        self._on_poll = on_poll or (lambda result: None)
        self._deadline = submit_deadline_seconds
        self._tick = tick_seconds
        self._limit = asyncio.Semaphore(concurrency)
        self._batch = batch
        self._clock = clock
        self.polls = 0

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("reconcile_failed")
            await asyncio.sleep(self._tick)

    async def reconcile_once(self) -> None:
        now = self._clock()
        store = self._service.store
        for job in await store.expired_submits(now - self._deadline):
            await self._service.fail(
                job.id, "submit_outcome_unknown",
                "WaveSpeed's answer to the submit was lost and no webhook adopted the job",
                "dispatcher", detail={"submit_attempted_at": job.submit_attempted_at},
            )
        due = await store.due_polls(now, self._batch)
        if due:
            await asyncio.gather(*(self._poll(job) for job in due))

    def _unknown_for_too_long(self, job: Job) -> bool:
        """A prediction WaveSpeed answers 404 for is given the submit deadline (from its submit)
        to appear, then the job fails: otherwise it would be polled for ever."""
        since = job.submitted_at or job.submit_attempted_at or job.created_at
        return self._clock() - since >= self._deadline

    async def _poll(self, job: Job) -> None:
        assert job.upstream_id is not None
        async with self._limit:
            self.polls += 1
            try:
                prediction = await self._upstream.get_result(job.upstream_id)
            except UpstreamRejected as exc:
                self._on_poll("error")
                if exc.upstream_status == 404 and self._unknown_for_too_long(job):
                    await self._service.fail(
                        job.id, "upstream_prediction_not_found",
                        f"WaveSpeed no longer knows prediction {job.upstream_id}", "poll",
                    )
                    return
                log.warning("poll_failed", job_id=job.id, error=exc.message)
            except UpstreamError as exc:
                log.warning("poll_failed", job_id=job.id, error=exc.message)
                self._on_poll("error")
            else:
                applied = await self._service.apply_prediction(job.id, prediction, "poll")
                self._on_poll(applied.result)
                log.info("polled", job_id=job.id, result=applied.result, status=prediction.status)
        next_poll = self._clock() + self._interval
        job_id = job.id

        def script(tx: Tx) -> None:
            tx.update_job(job_id, next_poll_at=next_poll)

        await self._service.store.write(script)
