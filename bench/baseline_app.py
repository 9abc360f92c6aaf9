"""The baseline: a bare Starlette app that validates the same JSON body as ``POST /v1/jobs``
with a pydantic model and answers 202 with JSON. It is what any Python endpoint taking this
body costs; the gateway's figures are read as ratios of it."""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.catalog import ASPECT_RATIOS, MAX_IMAGES, MAX_PROMPT_CHARS, MAX_WAIT_SECONDS, SEED_MAX

AspectRatio = Literal[ASPECT_RATIOS]  # type: ignore[valid-type]


class JobBody(BaseModel):
    """The fields of ``POST /v1/jobs`` with the catalog's ranges."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    task: Literal["text-to-image", "edit"] | None = None
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    images: list[str] | None = Field(default=None, max_length=MAX_IMAGES)
    aspect_ratio: AspectRatio = "1:1"
    seed: int = Field(default=-1, ge=-1, le=SEED_MAX)
    guidance_scale: float = Field(default=3.5, ge=1.0, le=20.0)
    safety_tolerance: Literal["1", "2", "3", "4", "5"] = "2"
    enable_safety_checker: bool | None = None
    callback_url: str | None = None
    metadata: dict[str, object] | None = None
    wait: float | None = Field(default=None, ge=0, le=MAX_WAIT_SECONDS)


async def create_job(request: Request) -> Response:
    try:
        job = JobBody.model_validate_json(await request.body())
    except ValidationError as exc:
        details = exc.errors(include_url=False, include_context=False, include_input=False)
        return JSONResponse({"error": {"code": "invalid_request", "details": details}}, 422)
    view = {"id": "job_" + secrets.token_hex(13), "status": "queued", **job.model_dump()}
    return JSONResponse(view, status_code=202, headers={"Location": f"/v1/jobs/{view['id']}"})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_baseline_app() -> Starlette:
    return Starlette(routes=[
        Route("/v1/jobs", create_job, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])
