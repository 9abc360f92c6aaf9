"""The request bodies every scenario sends: one ``POST /v1/jobs`` body (about 300 bytes of
JSON, text-to-image so that no image upload happens) and the WaveSpeed submit it becomes."""

from __future__ import annotations

import json
from typing import Any

MODEL = "flux-kontext-pro"
WAVESPEED_ID = "wavespeed-ai/flux-kontext-pro/text-to-image"

JOB: dict[str, Any] = {
    "model": MODEL,
    "prompt": (
        "A lighthouse on a basalt cliff at dusk, warm window light, long exposure sea, "
        "volumetric fog, 35mm film grain, muted teal and orange palette"
    ),
    "aspect_ratio": "16:9",
    "seed": 42,
    "guidance_scale": 3.5,
    "safety_tolerance": "2",
    "metadata": {"ticket": "BENCH-1", "team": "bench"},
}

# What the dispatcher sends WaveSpeed for JOB (the upstream body, defaults filled in).
SUBMIT: dict[str, Any] = {
    "prompt": JOB["prompt"],
    "aspect_ratio": "16:9",
    "seed": 42,
    "guidance_scale": 3.5,
    "safety_tolerance": "2",
}


def job_body(wait_seconds: float | None = None) -> str:
    """The JSON text of JOB; with ``wait`` the request is held until the job is terminal."""
    body = dict(JOB) if wait_seconds is None else {**JOB, "wait": wait_seconds}
    return json.dumps(body, separators=(",", ":"))
