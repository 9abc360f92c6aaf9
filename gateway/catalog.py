"""The model catalog: WaveSpeed's four FLUX.1 Kontext endpoints as data, and request normalization.

A change of WaveSpeed's limits or prices is a one-line edit of ``ENDPOINTS``. Validation
collects every wrong field before answering, so a client fixes its request in one round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from gateway.errors import FieldError
from gateway.money import decimal_text, to_micros

ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
SEED_MAX = 2147483647
MAX_PROMPT_CHARS = 20_000
MAX_IMAGES = 10
MAX_WAIT_SECONDS = 60
MAX_METADATA_BYTES = 4096

ParamKind = Literal["string", "integer", "number", "boolean", "image", "images"]
ImageMode = Literal["none", "one", "many"]
Task = Literal["text-to-image", "edit"]


@dataclass(frozen=True)
class Param:
    name: str
    kind: ParamKind
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    description: str = ""

    def schema(self) -> dict[str, Any]:
        json_type = {"image": "string", "images": "array"}.get(self.kind, self.kind)
        out: dict[str, Any] = {"type": json_type, "required": self.required}
        if self.default is not None:
            out["default"] = self.default
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.choices is not None:
            out["enum"] = list(self.choices)
        if self.description:
            out["description"] = self.description
        return out


PROMPT = Param("prompt", "string", required=True, description="What to generate or change.")
SEED = Param("seed", "integer", minimum=-1, maximum=SEED_MAX, description="-1 = random.")
GUIDANCE = Param("guidance_scale", "number", default=3.5, minimum=1.0, maximum=20.0)
ASPECT_T2I = Param("aspect_ratio", "string", default="1:1", choices=ASPECT_RATIOS)
ASPECT_EDIT = Param("aspect_ratio", "string", choices=ASPECT_RATIOS)
SAFETY_TOLERANCE = Param(
    "safety_tolerance", "string", default="2", choices=("1", "2", "3", "4", "5"),
    description="1 is the strictest, 5 the most permissive.",
)
SAFETY_CHECKER = Param("enable_safety_checker", "boolean", default=True)
IMAGE = Param("image", "image", required=True, description="URL or data: URI.")
IMAGES = Param("images", "images", required=True, description="URLs or data: URIs (2 or more).")


@dataclass(frozen=True)
class Endpoint:
    """One WaveSpeed model endpoint: the path after /api/v3/, its inputs and its price."""

    wavespeed_id: str
    model: str
    task: Task
    image_mode: ImageMode
    params: tuple[Param, ...]
    price_usd: Decimal
    param_index: Mapping[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_index", {p.name: p for p in self.params})

    def describe(self, price: Decimal) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "wavespeed_id": self.wavespeed_id,
            "images": {"none": "0", "one": "1", "many": f"2..{MAX_IMAGES}"}[self.image_mode],
            "price_usd": decimal_text(price),
            "parameters": {p.name: p.schema() for p in self.params},
        }


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("wavespeed-ai/flux-kontext-max/text-to-image", "flux-kontext-max", "text-to-image",
             "none", (PROMPT, SEED, GUIDANCE, ASPECT_T2I), Decimal("0.08")),
    Endpoint("wavespeed-ai/flux-kontext-pro/text-to-image", "flux-kontext-pro", "text-to-image",
             "none", (PROMPT, SEED, GUIDANCE, ASPECT_T2I, SAFETY_TOLERANCE), Decimal("0.04")),
    Endpoint("wavespeed-ai/flux-kontext-max", "flux-kontext-max", "edit",
             "one", (PROMPT, IMAGE, SEED, GUIDANCE, ASPECT_EDIT, SAFETY_CHECKER), Decimal("0.08")),
    Endpoint("wavespeed-ai/flux-kontext-max/multi", "flux-kontext-max", "edit",
             "many", (PROMPT, IMAGES, GUIDANCE, ASPECT_EDIT), Decimal("0.08")),
)
BY_WAVESPEED_ID: Mapping[str, Endpoint] = {e.wavespeed_id: e for e in ENDPOINTS}
MODELS: tuple[str, ...] = tuple(dict.fromkeys(e.model for e in ENDPOINTS))
# Required by every endpoint: missing, it is wrong whichever endpoint the client meant.
REQUIRED_EVERYWHERE: tuple[str, ...] = tuple(
    p.name for p in ENDPOINTS[0].params
    if p.required and all(p.name in e.param_index and e.param_index[p.name].required for e in ENDPOINTS)
)

# Fields of POST /v1/jobs that the gateway consumes itself; the rest go to WaveSpeed.
GATEWAY_FIELDS = frozenset({"model", "task", "images", "callback_url", "metadata", "wait"})
# Fields WaveSpeed accepts on every endpoint but that the gateway handles itself.
UPSTREAM_IGNORED = frozenset({"enable_sync_mode", "enable_base64_output"})


class Catalog:
    """The endpoints with their effective prices (catalog price unless a setting overrides it)."""

    def __init__(self, price_overrides: Mapping[str, Decimal] | None = None) -> None:
        overrides = dict(price_overrides or {})
        self._prices = {
            e.wavespeed_id: overrides.get(e.wavespeed_id, overrides.get(e.model, e.price_usd))
            for e in ENDPOINTS
        }

        self._micros = {wavespeed_id: to_micros(usd) for wavespeed_id, usd in self._prices.items()}

    def price(self, endpoint: Endpoint) -> Decimal:
        return self._prices[endpoint.wavespeed_id]

    def price_micros(self, endpoint: Endpoint) -> int:
        """``price`` in micro-dollars, as a job records it."""
        return self._micros[endpoint.wavespeed_id]

    def describe(self) -> list[dict[str, Any]]:
        return [e.describe(self.price(e)) for e in ENDPOINTS]


def select_endpoint(
    model: str, task: str | None, image_count: int, errors: list[FieldError]
) -> Endpoint | None:
    """The endpoint for a gateway model name (or full WaveSpeed id), task and image count."""
    if model in BY_WAVESPEED_ID:
        endpoint = BY_WAVESPEED_ID[model]
        if task is not None and task != endpoint.task:
            errors.append(FieldError("task", f"{model} is a {endpoint.task} endpoint"))
            return None
        _check_image_count(endpoint, image_count, errors)
        return endpoint
    if model not in MODELS:
        known = ", ".join(MODELS + tuple(BY_WAVESPEED_ID))
        errors.append(FieldError("model", f"unknown model {model!r}; known: {known}"))
        return None
    if task is None:
        task = "edit" if image_count else "text-to-image"
    candidates = [e for e in ENDPOINTS if e.model == model and e.task == task]
    if not candidates:
        if image_count:
            errors.append(FieldError("images", f"{model} takes no images (it has no {task} endpoint)"))
        else:
            errors.append(FieldError("task", f"{model} does not offer {task}"))
        return None
    if task == "text-to-image":
        endpoint = candidates[0]
        _check_image_count(endpoint, image_count, errors)
        return endpoint
    if image_count == 0:
        errors.append(FieldError("images", "edit needs at least one image"))
        return None
    mode: ImageMode = "one" if image_count == 1 else "many"
    return next(e for e in candidates if e.image_mode == mode)


def check_params_loosely(values: Mapping[str, Any], errors: list[FieldError]) -> None:
    """Check values against any endpoint that has them: used when no endpoint could be chosen,
    so that the answer still names every wrong field."""
    specs: dict[str, Param] = {}
    for endpoint in ENDPOINTS:
        for param in endpoint.params:
            specs.setdefault(param.name, param)
    for name, value in values.items():
        spec = specs.get(name)
        if spec is None:
            if name not in UPSTREAM_IGNORED:
                errors.append(FieldError(name, "not a parameter of any model"))
        elif value is not None and (problem := _check_value(spec, value)):
            errors.append(FieldError(name, problem))
    for name in REQUIRED_EVERYWHERE:
        if values.get(name) is None:
            errors.append(FieldError(name, "is required"))


def _check_image_count(endpoint: Endpoint, count: int, errors: list[FieldError]) -> None:
    wanted = {"none": (0, 0), "one": (1, 1), "many": (2, MAX_IMAGES)}[endpoint.image_mode]
    if not wanted[0] <= count <= wanted[1]:
        shown = str(wanted[0]) if wanted[0] == wanted[1] else f"{wanted[0]} to {wanted[1]}"
        errors.append(FieldError("images", f"{endpoint.wavespeed_id} takes {shown} image(s)"))


def check_params(
    endpoint: Endpoint, values: Mapping[str, Any], errors: list[FieldError]
) -> dict[str, Any]:
    """Validate WaveSpeed parameters for ``endpoint``; return the body with defaults filled in.

    Image parameters are checked by the caller (they may be data: URIs to upload first), so
    here they are only required to be present.
    """
    body: dict[str, Any] = {}
    for name, value in values.items():
        param = endpoint.param_index.get(name)
        if param is None:
            if name not in UPSTREAM_IGNORED:
                errors.append(
                    FieldError(name, f"not a parameter of {endpoint.wavespeed_id}")
                )
            continue
        if value is None:
            continue
        problem = _check_value(param, value)
        if problem:
            errors.append(FieldError(name, problem))
        else:
            body[name] = _coerce(param, value)
    for param in endpoint.params:
        if param.name in body:
            continue
        if param.required:
            if param.name not in values or values[param.name] is None:
                errors.append(FieldError(param.name, "is required"))
        elif param.default is not None:
            body[param.name] = param.default
    return body


def _check_value(param: Param, value: Any) -> str | None:
    if param.kind in ("image", "images"):
        return None
    if param.kind == "boolean":
        return None if isinstance(value, bool) else "must be true or false"
    if param.kind == "string":
        if not isinstance(value, str):
            return "must be a string"
        if param.choices is not None and value not in param.choices:
            return f"must be one of {', '.join(param.choices)}"
        if param.name == "prompt":
            if not value.strip():
                return "must not be empty"
            if len(value) > MAX_PROMPT_CHARS:
                return f"must be at most {MAX_PROMPT_CHARS} characters"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be {'an integer' if param.kind == 'integer' else 'a number'}"
    if param.kind == "integer" and not (isinstance(value, int) or float(value).is_integer()):
        return "must be an integer"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if (param.minimum is not None and value < param.minimum) or (
        param.maximum is not None and value > param.maximum
    ):
        return f"must be between {_num(param.minimum)} and {_num(param.maximum)}"
    return None


def _coerce(param: Param, value: Any) -> Any:
    if param.kind == "number":
        return float(value)
    if param.kind == "integer":
        return int(value)
    return value


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() and abs(value) > 100 else str(value)
