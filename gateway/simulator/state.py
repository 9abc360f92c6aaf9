"""The simulator's state and the life of a task: created -> processing -> completed | failed.

Each accepted submit runs as an asyncio task: it waits ``latency_seconds`` (and while the
``paused`` fault is on), ends completed or failed (``failure_rate``), then hands the
prediction to the webhook sender. ``wait_idle`` awaits every such task.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.logs import get_logger
from gateway.simulator.config import Dice, Faults, SimulatorConfig
from gateway.simulator.records import (
    MediaStore,
    Prediction,
    RecordedRequest,
    WebhookDelivery,
    new_prediction_id,
)
from gateway.simulator.sender import WebhookSender

log = get_logger()

PAUSE_POLL_SECONDS = 0.01  # how often a paused task looks at the ``paused`` fault again


class SimulatorState:
    """Everything one simulator instance holds; exposed as ``app.state.simulator``."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.dice = Dice(config.seed)
        self.requests: list[RecordedRequest] = []
        self.predictions: dict[str, Prediction] = {}
        self.webhooks: list[WebhookDelivery] = []
        self.media = MediaStore()
        self.sender = WebhookSender(config, self.dice, self.webhooks)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def faults(self) -> Faults:
        return self.config.faults

    async def start(self) -> None:
        await self.sender.start()

    async def stop(self) -> None:
        """Cancel the tasks still running and close the webhook client."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sender.stop()

    async def wait_idle(self) -> None:
        """Wait until every task has ended and sent its webhooks (never, while paused)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def reset_logs(self) -> None:
        self.requests.clear()
        self.webhooks.clear()

    def create_prediction(
        self, model: str, body: dict[str, Any], webhook: str | None
    ) -> Prediction:
        prediction_id = new_prediction_id()
        get_url = f"{self.config.base_url()}/api/v3/predictions/{prediction_id}/result"
        prediction = Prediction(prediction_id, model, body, get_url, webhook)
        self.predictions[prediction_id] = prediction
        log.debug("simulator.prediction.created", prediction_id=prediction_id, model=model)
        return prediction

    def launch(self, prediction: Prediction) -> None:
        """Start running ``prediction`` in the background."""
        task = asyncio.create_task(self._run(prediction), name=f"simulator-{prediction.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def launch_after_answer(self, prediction: Prediction) -> None:
        """``launch`` as a response's background task: runs once the answer has been sent."""
        self.launch(prediction)

    async def _run(self, prediction: Prediction) -> None:
        prediction.status = "processing"
        started = time.monotonic()
        try:
            await asyncio.sleep(self.config.latency_seconds)
            # ``paused`` is a plain field that tests may flip directly, so it is polled.
            while self.faults.paused:  # noqa: ASYNC110
                await asyncio.sleep(PAUSE_POLL_SECONDS)
            self._finish(prediction, started)
            await self.sender.deliver(prediction)
        except Exception:
            log.exception("simulator.task.crashed", prediction_id=prediction.id)

    def _finish(self, prediction: Prediction, started: float) -> None:
        prediction.inference_ms = round((time.monotonic() - started) * 1000)
        if self.dice.roll(self.faults.failure_rate):
            prediction.status = "failed"
            prediction.error = "simulated failure"
        else:
            base = self.config.base_url()
            prediction.status = "completed"
            prediction.outputs = [f"{base}/outputs/{prediction.id}/0.png"]
            prediction.has_nsfw_contents = [False]
        prediction.done.set()
        log.debug("simulator.prediction.finished", prediction_id=prediction.id,
                  status=prediction.status)
