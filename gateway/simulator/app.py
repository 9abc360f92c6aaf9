"""The simulator's HTTP surface: WaveSpeed's routes, in WaveSpeed's envelope, plus ``/_sim/``.

``create_simulator_app`` builds a Starlette app whose ``app.state.simulator`` is the
``SimulatorState`` (requests, predictions, webhooks, faults, ``wait_idle()``).

The disconnect fault drops the connection with no HTTP answer. Under uvicorn this is done by
starting the response with a header value uvicorn refuses before writing anything, then
raising: uvicorn closes the socket (and logs "Exception in ASGI application"), and the client
sees ``httpx.RemoteProtocolError``. Under ``httpx.ASGITransport`` the raised
``SimulatedDisconnect``, itself an ``httpx.RemoteProtocolError``, surfaces from the client call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.catalog import BY_WAVESPEED_ID, SEED_MAX
from gateway.logs import get_logger
from gateway.simulator.config import FaultError, SimulatorConfig
from gateway.simulator.envelope import ApiError, error_envelope, fail, json_object, ok, sim_state
from gateway.simulator.media import create_upload, get_media, put_upload, upload_binary
from gateway.simulator.middleware import RecordRequests, RequireApiKey
from gateway.simulator.png import dimensions, render_png
from gateway.simulator.records import Prediction
from gateway.simulator.state import SimulatorState
from gateway.simulator.validation import check_submission, describe

log = get_logger()


class SimulatedDisconnect(httpx.RemoteProtocolError):
    """The disconnect fault: the connection was dropped without any HTTP answer."""


class DropConnection(Response):
    """Closes the connection without a status line (see the module docstring)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A newline in a header value: uvicorn refuses it after marking the response started
        # and before writing a byte, so the exception below makes it close the connection.
        start = {"type": "http.response.start", "status": 500, "headers": [(b"x-drop", b"\n")]}
        with contextlib.suppress(Exception):
            await send(start)
        raise SimulatedDisconnect("Server disconnected without sending a response.")


def _fault(sim: SimulatorState, knob: str, **context: str) -> bool:
    """Roll the dice for the fault ``knob`` (a ``Faults`` rate); log it when it strikes."""
    if not sim.dice.roll(float(getattr(sim.faults, knob))):
        return False
    log.info("simulator.fault", fault=knob, **context)
    return True


# --- predictions -------------------------------------------------------------------------


async def submit(request: Request) -> Response:
    sim = sim_state(request)
    endpoint = BY_WAVESPEED_ID.get(request.path_params["model_id"])
    if endpoint is None:
        raise ApiError(404, "model not found")
    if _fault(sim, "rate_429"):
        raise ApiError(429, "Too many requests", {"Retry-After": "1"})
    if _fault(sim, "rate_5xx"):
        raise ApiError(500, "Internal server error")
    body = await json_object(request)
    webhook = request.query_params.get("webhook")
    errors = check_submission(endpoint, body, webhook)
    if errors:
        raise ApiError(400, describe(errors))
    prediction = sim.create_prediction(endpoint.wavespeed_id, body, webhook)
    return await _answer_submit(sim, prediction)


async def _answer_submit(sim: SimulatorState, prediction: Prediction) -> Response:
    if _fault(sim, "lost_answer_rate", prediction_id=prediction.id):
        launch = BackgroundTask(sim.launch_after_answer, prediction)
        return fail(500, "Internal server error", background=launch)
    if _fault(sim, "disconnect_rate", prediction_id=prediction.id):
        sim.launch(prediction)
        return DropConnection()
    if prediction.input.get("enable_sync_mode") is True:
        sim.launch(prediction)
        return ok(await _wait_for_result(sim, prediction))
    return ok(prediction.data(), BackgroundTask(sim.launch_after_answer, prediction))


async def _wait_for_result(sim: SimulatorState, prediction: Prediction) -> dict[str, Any]:
    timeout = sim.config.sync_timeout_seconds
    try:
        await asyncio.wait_for(prediction.done.wait(), timeout)
    except TimeoutError:
        error = f"Sync mode timed out after {timeout:g} seconds; query {prediction.get_url}"
        return {**prediction.data(), "status": "processing", "code": 5004, "error": error}
    return prediction.data()


async def get_prediction(request: Request) -> Response:
    sim = sim_state(request)
    if _fault(sim, "get_5xx_rate"):
        raise ApiError(503, "Service temporarily unavailable")
    prediction = sim.predictions.get(request.path_params["prediction_id"])
    if prediction is None:
        raise ApiError(404, "prediction not found")
    return ok(prediction.data())


async def output_png(request: Request) -> Response:
    prediction = sim_state(request).predictions.get(request.path_params["prediction_id"])
    index: int = request.path_params["index"]
    if prediction is None or index >= len(prediction.outputs):
        raise ApiError(404, "output not found")
    width, height = dimensions(str(prediction.input.get("aspect_ratio", "1:1")))
    prompt = str(prediction.input.get("prompt", ""))
    png = render_png(output_seed(prediction), prompt, width, height)
    return Response(png, media_type="image/png")


def output_seed(prediction: Prediction) -> int:
    """The submitted seed, or one derived from the prediction id when absent or -1."""
    seed = prediction.input.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed != -1:
        return seed
    return int(prediction.id[:8], 16) % (SEED_MAX + 1)


# --- account -----------------------------------------------------------------------------


async def webhook_secret(request: Request) -> Response:
    return ok({"secret": sim_state(request).config.webhook_secret})


async def balance(request: Request) -> Response:
    return ok({"balance": 100.0})


# --- inspection and fault control (/_sim/) -------------------------------------------------


async def sim_requests(request: Request) -> Response:
    return ok([dataclasses.asdict(r) for r in sim_state(request).requests])


async def sim_predictions(request: Request) -> Response:
    return ok([p.record() for p in sim_state(request).predictions.values()])


async def sim_webhooks(request: Request) -> Response:
    return ok([dataclasses.asdict(w) for w in sim_state(request).webhooks])


async def sim_faults(request: Request) -> Response:
    faults = sim_state(request).faults
    if request.method == "POST":
        try:
            faults.update(await json_object(request))
        except FaultError as exc:
            raise ApiError(400, str(exc)) from None
        log.info("simulator.faults.changed", **faults.as_dict())
    return ok(faults.as_dict())


async def sim_reset(request: Request) -> Response:
    sim_state(request).reset_logs()
    return ok({})


# --- the app -----------------------------------------------------------------------------


ROUTES = [
    Route("/api/v3/predictions/{prediction_id}/result", get_prediction, methods=["GET"]),
    Route("/api/v3/predictions/{prediction_id}", get_prediction, methods=["GET"]),
    Route("/api/v3/webhook/secret", webhook_secret, methods=["GET"]),
    Route("/api/v3/balance", balance, methods=["GET"]),
    Route("/api/v3/media/upload/binary", upload_binary, methods=["POST"]),
    Route("/api/v3/media/uploads", create_upload, methods=["POST"]),
    Route("/api/v3/{model_id:path}", submit, methods=["POST"]),
    Route("/outputs/{prediction_id}/{index:int}.png", output_png, methods=["GET"]),
    Route("/media/put/{token}", put_upload, methods=["PUT"]),
    Route("/media/{name}", get_media, methods=["GET"]),
    Route("/_sim/requests", sim_requests, methods=["GET"]),
    Route("/_sim/predictions", sim_predictions, methods=["GET"]),
    Route("/_sim/webhooks", sim_webhooks, methods=["GET"]),
    Route("/_sim/faults", sim_faults, methods=["GET", "POST"]),
    Route("/_sim/reset", sim_reset, methods=["POST"]),
]


def create_simulator_app(config: SimulatorConfig | None = None) -> Starlette:
    """A WaveSpeed stand-in; enter its lifespan (uvicorn does) before sending it traffic."""
    state = SimulatorState(config or SimulatorConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(RecordRequests, state=state),
            Middleware(RequireApiKey, state=state),
        ],
        exception_handlers={ApiError: error_envelope, HTTPException: error_envelope},
        lifespan=lifespan,
    )
    app.state.simulator = state
    return app
