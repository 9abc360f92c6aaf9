"""Bad input for every parameter of every endpoint: a 422 naming each wrong field (all of them
in one answer), 400 for malformed JSON, 413 past the body limit, 401 without a valid key, 404
for unknown routes, always in the one error shape, and nothing ever reaching WaveSpeed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.conftest import Gateway, GatewayFactory, Sim, TenantHandle, in_process_gateway

MAX_BODY = 64 * 1024
URL_A = "https://images.example/a.png"
URL_B = "https://images.example/b.png"

T2I_MAX: dict[str, Any] = {"model": "flux-kontext-max", "prompt": "a fox"}
T2I_PRO: dict[str, Any] = {"model": "flux-kontext-pro", "prompt": "a fox"}
EDIT: dict[str, Any] = {"model": "flux-kontext-max", "prompt": "a fox", "images": [URL_A]}
MULTI: dict[str, Any] = {"model": "flux-kontext-max", "prompt": "a fox", "images": [URL_A, URL_B]}
ENDPOINTS = {"t2i-max": T2I_MAX, "t2i-pro": T2I_PRO, "edit": EDIT, "multi": MULTI}
REMOVE = object()


# Rejections change nothing, so they share one in-process gateway (and event loop) per module;
# every case still checks that nothing was stored and nothing reached WaveSpeed.
module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    async with in_process_gateway(tmp_path_factory.mktemp("refusing"), max_body_bytes=MAX_BODY) as g:
        yield g


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(gw: Gateway) -> TenantHandle:
    return await gw.new_tenant()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def accepting(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TenantHandle]:
    """A second gateway for requests that are accepted (they create jobs)."""
    async with in_process_gateway(tmp_path_factory.mktemp("accepting"), max_body_bytes=MAX_BODY) as g:
        yield await g.new_tenant()


def sim_of(gateway: Gateway) -> Sim:
    sim: Sim = gateway.simulator  # type: ignore[attr-defined]
    return sim


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = dict(base)
    for name, value in changes.items():
        if value is REMOVE:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def assert_error_shape(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}  # details always, [] when not fields
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code
    assert isinstance(error["details"], list)
    assert bool(error["details"]) == (status == 422), error  # fields named exactly when wrong
    for detail in error["details"]:
        assert set(detail) == {"field", "message"}
        assert isinstance(detail["field"], str) and isinstance(detail["message"], str)
        assert detail["message"]
    return error


def invalid_fields(response: httpx.Response) -> set[str]:
    error = assert_error_shape(response, 422, "invalid_request")
    return {d["field"] for d in error["details"]}


# (case id, body, the fields the answer must name, exactly)
BAD: list[tuple[str, Any, set[str]]] = []


def bad(case: str, body: Any, *fields: str) -> None:
    BAD.append((case, body, set(fields)))


for name, base in ENDPOINTS.items():
    bad(f"{name}-prompt-missing", with_(base, prompt=REMOVE), "prompt")
    bad(f"{name}-prompt-null", with_(base, prompt=None), "prompt")
    bad(f"{name}-prompt-empty", with_(base, prompt=""), "prompt")
    bad(f"{name}-prompt-blank", with_(base, prompt="  \n\t"), "prompt")
    bad(f"{name}-prompt-number", with_(base, prompt=12), "prompt")
    bad(f"{name}-prompt-list", with_(base, prompt=["a"]), "prompt")
    bad(f"{name}-prompt-too-long", with_(base, prompt="x" * 20_001), "prompt")
    bad(f"{name}-guidance-low", with_(base, guidance_scale=0.99), "guidance_scale")
    bad(f"{name}-guidance-zero", with_(base, guidance_scale=0), "guidance_scale")
    bad(f"{name}-guidance-high", with_(base, guidance_scale=20.01), "guidance_scale")
    bad(f"{name}-guidance-string", with_(base, guidance_scale="3.5"), "guidance_scale")
    bad(f"{name}-guidance-bool", with_(base, guidance_scale=True), "guidance_scale")
    bad(f"{name}-guidance-object", with_(base, guidance_scale={"v": 3}), "guidance_scale")
    bad(f"{name}-aspect-unknown", with_(base, aspect_ratio="5:4"), "aspect_ratio")
    bad(f"{name}-aspect-reversed-spacing", with_(base, aspect_ratio="16 : 9"), "aspect_ratio")
    bad(f"{name}-aspect-number", with_(base, aspect_ratio=1.5), "aspect_ratio")
    bad(f"{name}-unknown-parameter", with_(base, steps=30), "steps")
    bad(f"{name}-wait-negative", with_(base, wait=-1), "wait")
    bad(f"{name}-wait-too-long", with_(base, wait=61), "wait")
    bad(f"{name}-wait-string", with_(base, wait="5"), "wait")
    bad(f"{name}-wait-bool", with_(base, wait=True), "wait")
    bad(f"{name}-metadata-string", with_(base, metadata="x"), "metadata")
    bad(f"{name}-metadata-list", with_(base, metadata=[1, 2]), "metadata")
    bad(f"{name}-metadata-too-big", with_(base, metadata={"blob": "y" * 4100}), "metadata")
    bad(f"{name}-callback-ftp", with_(base, callback_url="ftp://hooks.example/x"), "callback_url")
    bad(f"{name}-callback-relative", with_(base, callback_url="/hooks/x"), "callback_url")
    bad(f"{name}-callback-no-host", with_(base, callback_url="http://"), "callback_url")
    bad(f"{name}-callback-number", with_(base, callback_url=5), "callback_url")
    bad(f"{name}-singular-image", with_(base, image=URL_A), "image")

for name, base in ENDPOINTS.items():
    if name == "multi":
        bad("multi-seed-not-a-parameter", with_(base, seed=1), "seed")
        continue
    bad(f"{name}-seed-string", with_(base, seed="42"), "seed")
    bad(f"{name}-seed-fraction", with_(base, seed=1.5), "seed")
    bad(f"{name}-seed-bool", with_(base, seed=False), "seed")
    bad(f"{name}-seed-below", with_(base, seed=-2), "seed")
    bad(f"{name}-seed-above", with_(base, seed=2147483648), "seed")
    bad(f"{name}-seed-huge", with_(base, seed=9999999999), "seed")

bad("pro-safety-tolerance-int", with_(T2I_PRO, safety_tolerance=2), "safety_tolerance")
bad("pro-safety-tolerance-zero", with_(T2I_PRO, safety_tolerance="0"), "safety_tolerance")
bad("pro-safety-tolerance-six", with_(T2I_PRO, safety_tolerance="6"), "safety_tolerance")
bad("pro-safety-tolerance-word", with_(T2I_PRO, safety_tolerance="strict"), "safety_tolerance")
for name in ("t2i-max", "edit", "multi"):
    bad(f"{name}-safety-tolerance-not-a-parameter",
        with_(ENDPOINTS[name], safety_tolerance="2"), "safety_tolerance")
bad("edit-safety-checker-string", with_(EDIT, enable_safety_checker="true"), "enable_safety_checker")
bad("edit-safety-checker-int", with_(EDIT, enable_safety_checker=1), "enable_safety_checker")
for name in ("t2i-max", "t2i-pro", "multi"):
    bad(f"{name}-safety-checker-not-a-parameter",
        with_(ENDPOINTS[name], enable_safety_checker=True), "enable_safety_checker")

bad("images-a-string", with_(EDIT, images=URL_A), "images")
bad("images-an-object", with_(EDIT, images={"url": URL_A}), "images")
bad("images-item-number", with_(EDIT, images=[7]), "images[0]")
bad("images-item-empty", with_(EDIT, images=[""]), "images[0]")
bad("images-item-not-a-url", with_(EDIT, images=["a picture"]), "images[0]")
bad("images-item-ftp", with_(EDIT, images=["ftp://images.example/a.png"]), "images[0]")
bad("images-item-file", with_(EDIT, images=["file:///etc/passwd"]), "images[0]")
bad("images-second-item-bad", with_(MULTI, images=[URL_A, "nope"]), "images[1]")
bad("images-two-items-bad", with_(MULTI, images=[1, "nope", URL_A]), "images[0]", "images[1]")
bad("data-uri-bad-base64", with_(EDIT, images=["data:image/png;base64,!!!notbase64"]), "images[0]")
bad("data-uri-not-base64", with_(EDIT, images=["data:image/png,rawbytes"]), "images[0]")
bad("data-uri-not-an-image", with_(EDIT, images=["data:text/plain;base64,aGVsbG8="]), "images[0]")
bad("data-uri-no-type", with_(EDIT, images=["data:;base64,aGVsbG8="]), "images[0]")
bad("data-uri-empty", with_(EDIT, images=["data:image/png;base64,"]), "images[0]")
bad("data-uri-garbage", with_(EDIT, images=["data:nonsense"]), "images[0]")
bad("images-too-many", with_(MULTI, images=[f"https://images.example/{i}.png" for i in range(11)]),
    "images")
bad("images-with-pro", with_(T2I_PRO, images=[URL_A]), "images")
bad("images-several-with-pro", with_(T2I_PRO, images=[URL_A, URL_B]), "images")
bad("pro-task-edit", with_(T2I_PRO, task="edit"), "task")
bad("task-unknown", with_(T2I_MAX, task="upscale"), "task")
bad("task-number", with_(T2I_MAX, task=1), "task")
bad("task-edit-without-images", with_(T2I_MAX, task="edit"), "images")
bad("task-text-to-image-with-images", with_(EDIT, task="text-to-image"), "images")
bad("full-id-task-mismatch",
    with_(T2I_MAX, model="wavespeed-ai/flux-kontext-max/text-to-image", task="edit"), "task")
bad("full-id-edit-without-image", with_(T2I_MAX, model="wavespeed-ai/flux-kontext-max"), "images")
bad("full-id-multi-one-image", with_(EDIT, model="wavespeed-ai/flux-kontext-max/multi"), "images")
bad("full-id-t2i-with-image",
    with_(EDIT, model="wavespeed-ai/flux-kontext-max/text-to-image"), "images")
bad("model-missing", with_(T2I_MAX, model=REMOVE), "model")
bad("model-empty", with_(T2I_MAX, model=""), "model")
bad("model-number", with_(T2I_MAX, model=3), "model")
bad("model-unknown", with_(T2I_MAX, model="flux-dev"), "model")
bad("model-unknown-wavespeed-id", with_(T2I_MAX, model="wavespeed-ai/flux-kontext-pro"), "model")
bad("body-a-list", [T2I_MAX], "body")
bad("body-a-string", "flux", "body")
bad(
    "several-wrong-fields",
    {"model": "flux-kontext-max", "prompt": "", "seed": "x", "guidance_scale": 50,
     "aspect_ratio": "5:4", "wait": 100, "metadata": 3, "callback_url": "ftp://x", "steps": 1},
    "prompt", "seed", "guidance_scale", "aspect_ratio", "wait", "metadata", "callback_url", "steps",
)
bad(
    "several-wrong-fields-pro",
    {"model": "flux-kontext-pro", "seed": 2**31, "safety_tolerance": 3, "enable_safety_checker": True},
    "prompt", "seed", "safety_tolerance", "enable_safety_checker",
)
bad(
    "several-wrong-fields-multi",
    {"model": "flux-kontext-max", "prompt": 1, "images": [URL_A, "data:image/png;base64,@@"],
     "seed": 3, "aspect_ratio": "2:1"},
    "prompt", "images[1]", "seed", "aspect_ratio",
)
bad(
    "unknown-model-still-checks-the-rest",
    {"model": "flux-dev", "seed": "x", "guidance_scale": 0, "aspect_ratio": "5:4", "wait": -1},
    "model", "prompt", "seed", "guidance_scale", "aspect_ratio", "wait",
)
bad("no-model-no-prompt", {"seed": 1}, "model", "prompt")
bad("empty-object", {}, "model", "prompt")


@module_loop
@pytest.mark.parametrize(("body", "fields"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
async def test_bad_input_is_422_naming_every_wrong_field(
    gw: Gateway, client: TenantHandle, body: Any, fields: set[str]
) -> None:
    response = await client.client.post("/v1/jobs", json=body)
    assert invalid_fields(response) == fields
    listed = await client.client.get("/v1/jobs")
    assert listed.json()["data"] == []
    assert sim_of(gw).state.requests == []


@module_loop
@pytest.mark.parametrize("raw", [b"null", b"[]", b'"x"', b"3"])
async def test_a_body_that_is_not_an_object_is_422(gw: Gateway, client: TenantHandle, raw: bytes) -> None:
    response = await client.client.post(
        "/v1/jobs", content=raw, headers={"content-type": "application/json"}
    )
    assert invalid_fields(response) == {"body"}


GOOD: list[tuple[str, dict[str, Any]]] = [
    ("seed-max", with_(T2I_MAX, seed=2147483647)),
    ("seed-random", with_(T2I_PRO, seed=-1)),
    ("seed-zero", with_(EDIT, seed=0)),
    ("seed-integral-float", with_(T2I_MAX, seed=7.0)),
    ("guidance-min", with_(T2I_MAX, guidance_scale=1.0)),
    ("guidance-max", with_(MULTI, guidance_scale=20)),
    ("every-aspect-ratio", with_(T2I_PRO, aspect_ratio="9:21")),
    ("safety-tolerance-1", with_(T2I_PRO, safety_tolerance="1")),
    ("safety-tolerance-5", with_(T2I_PRO, safety_tolerance="5")),
    ("safety-checker-false", with_(EDIT, enable_safety_checker=False)),
    ("ten-images", with_(MULTI, images=[f"https://images.example/{i}.png" for i in range(10)])),
    ("wait-zero", with_(T2I_MAX, wait=0)),
    ("null-optional-values", with_(T2I_MAX, seed=None, aspect_ratio=None, metadata=None)),
    ("metadata-object", with_(T2I_MAX, metadata={"order": 1, "tags": ["a"]})),
    ("callback-https", with_(T2I_MAX, callback_url="https://hooks.example/x")),
    ("sync-mode-flag-ignored", with_(T2I_MAX, enable_sync_mode=False)),
    ("prompt-20000-chars", with_(T2I_MAX, prompt="x" * 20_000)),
]


@module_loop
@pytest.mark.parametrize("body", [c[1] for c in GOOD], ids=[c[0] for c in GOOD])
async def test_edge_values_are_accepted(accepting: TenantHandle, body: dict[str, Any]) -> None:
    response = await accepting.client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job = response.json()
    for name in ("seed", "guidance_scale", "aspect_ratio", "safety_tolerance", "enable_safety_checker"):
        if body.get(name) is not None:
            assert job["inputs"][name] == body[name]
    for name in ("wait", "metadata", "callback_url", "model", "task", "enable_sync_mode"):
        assert name not in job["inputs"]


@module_loop
async def test_seed_integral_float_is_sent_as_an_integer(accepting: TenantHandle) -> None:
    response = await accepting.client.post("/v1/jobs", json=with_(T2I_MAX, seed=7.0))
    inputs = response.json()["inputs"]
    assert inputs["seed"] == 7 and isinstance(inputs["seed"], int)
    assert isinstance(inputs["guidance_scale"], float)


@module_loop
@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"model": "flux-kontext-max",}', b"not json", b"", b"\xff\xfe{}", b'{"a": NaN'],
    ids=["truncated", "trailing-comma", "text", "empty", "not-utf8", "broken-nan"],
)
async def test_malformed_json_is_400(gw: Gateway, client: TenantHandle, raw: bytes) -> None:
    response = await client.client.post(
        "/v1/jobs", content=raw, headers={"content-type": "application/json"}
    )
    assert_error_shape(response, 400, "invalid_json")
    assert sim_of(gw).state.requests == []


@module_loop
@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"model": "flux-kontext-max", "prompt": "x", "guidance_scale": NaN, "seed": Infinity}',
         "is not valid JSON"),
        # Not checked by any parameter's rules: each was accepted before, and its 202 and every
        # later listing of the tenant's jobs failed (the value cannot be written as JSON).
        (b'{"model": "flux-kontext-max", "prompt": "x", "metadata": {"score": NaN}}',
         "is not valid JSON"),
        (b'{"model": "flux-kontext-max", "prompt": "x", "metadata": {"a": [1, -Infinity]}}',
         "is not valid JSON"),
        (b'{"model": "flux-kontext-max", "prompt": "x", "metadata": {"a": 1e400}}',
         "out of range"),
        (b'{"model": "flux-kontext-max", "prompt": "x", "metadata": {"a": "\\ud800"}}',
         "unpaired surrogate"),
        (b'{"model": "flux-kontext-max", "prompt": "x", "metadata": {"\\uDFFF": 1}}',
         "unpaired surrogate"),
        (b'{"model": "flux-kontext-max", "prompt": "a \\ud83e fox"}', "unpaired surrogate"),
        (b'{"model": "flux-kontext-max", "prompt": "a \xed\xa0\x80 fox"}', "can't decode"),
    ],
    ids=["parameters", "metadata-nan", "nested-infinity", "overflow", "surrogate", "key",
         "prompt", "encoded-surrogate"],
)
async def test_values_that_could_not_be_written_back_are_400(
    gw: Gateway, client: TenantHandle, raw: bytes, why: str
) -> None:
    response = await client.client.post(
        "/v1/jobs", content=raw, headers={"content-type": "application/json"}
    )
    assert_error_shape(response, 400, "invalid_json")
    assert why in response.json()["error"]["message"]
    assert sim_of(gw).state.requests == []
    listing = await client.client.get("/v1/jobs")
    assert listing.status_code == 200 and listing.json()["data"] == []


@module_loop
async def test_escaped_characters_outside_the_basic_plane_are_kept(accepting: TenantHandle) -> None:
    raw = b'{"model": "flux-kontext-max", "prompt": "a \\ud83e\\udd8a", "metadata": {"n": 1e300}}'
    response = await accepting.client.post(
        "/v1/jobs", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["inputs"]["prompt"] == "a \U0001f98a"
    assert response.json()["metadata"] == {"n": 1e300}


def nested(levels: int) -> Any:
    """An object ``levels`` deep: {"a": {"a": ... 1}}."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


@module_loop
@pytest.mark.parametrize(
    "raw",
    [
        # One level past the limit (the body is one level more than its metadata).
        json.dumps(with_(T2I_MAX, metadata=nested(64))).encode(),
        # Deep enough that the JSON writer cannot write it back (it stops at 254 levels).
        json.dumps(with_(T2I_MAX, metadata=nested(300))).encode(),
        # Deep enough that Python's reader raises RecursionError.
        b'{"model": "flux-kontext-max", "prompt": "x", "metadata": ' + b"[" * 5000 + b"]" * 5000
        + b"}",
    ],
    ids=["65", "301", "5001"],
)
async def test_json_nested_too_deep_is_400(gw: Gateway, client: TenantHandle, raw: bytes) -> None:
    response = await client.client.post(
        "/v1/jobs", content=raw, headers={"content-type": "application/json"}
    )
    assert_error_shape(response, 400, "invalid_json")
    assert "nested deeper than 64 levels" in response.json()["error"]["message"]
    assert sim_of(gw).state.requests == []
    listing = await client.client.get("/v1/jobs")
    assert listing.status_code == 200 and listing.json()["data"] == []


@module_loop
async def test_metadata_nested_to_the_limit_is_kept_and_shown(accepting: TenantHandle) -> None:
    metadata = nested(63)  # the body is 64 levels deep
    response = await accepting.client.post("/v1/jobs", json=with_(T2I_MAX, metadata=metadata))
    assert response.status_code == 202, response.text
    assert response.json()["metadata"] == metadata
    shown = await accepting.client.get(f"/v1/jobs/{response.json()['id']}")
    assert shown.status_code == 200 and shown.json()["metadata"] == metadata


def big_body() -> bytes:
    return json.dumps(with_(T2I_MAX, prompt="x" * (MAX_BODY + 100))).encode()


@module_loop
async def test_body_over_the_limit_with_content_length_is_413(gw: Gateway, client: TenantHandle) -> None:
    body = big_body()
    response = await client.client.post(
        "/v1/jobs", content=body, headers={"content-type": "application/json"}
    )
    assert response.request.headers["content-length"] == str(len(body))
    assert_error_shape(response, 413, "payload_too_large")
    assert sim_of(gw).state.requests == []


@module_loop
async def test_body_over_the_limit_chunked_is_413(gw: Gateway, client: TenantHandle) -> None:
    body = big_body()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start:start + 1000]

    response = await client.client.post(
        "/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error_shape(response, 413, "payload_too_large")
    listed = await client.client.get("/v1/jobs")
    assert listed.json()["data"] == []
    assert sim_of(gw).state.requests == []


@module_loop
async def test_a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_not(
    accepting: TenantHandle,
) -> None:
    job = json.dumps(with_(T2I_MAX, metadata={"pad": "p" * 100})).encode()
    for size, status in ((MAX_BODY, 202), (MAX_BODY + 1, 413)):
        body = job + b" " * (size - len(job))  # JSON may end in white space

        async def chunks(body: bytes = body) -> AsyncIterator[bytes]:
            for start in range(0, len(body), 4096):
                yield body[start:start + 4096]

        headers = {"content-type": "application/json"}
        streamed = await accepting.client.post("/v1/jobs", content=chunks(), headers=headers)
        declared = await accepting.client.post("/v1/jobs", content=body, headers=headers)
        assert declared.request.headers["content-length"] == str(size)
        assert (streamed.status_code, declared.status_code) == (status, status), size


async def test_body_limit_over_real_sockets(gateway_factory: GatewayFactory, simulator: Sim) -> None:
    """The same limit through uvicorn, declared and chunked (bodies small enough that the
    client has sent everything before the server answers, so the 413 is always readable)."""
    gateway = await gateway_factory(max_body_bytes=MAX_BODY)
    tenant = await gateway.new_tenant()
    body = big_body()
    for _ in range(3):
        declared = await tenant.client.post(
            "/v1/jobs", content=body, headers={"content-type": "application/json"}
        )
        assert_error_shape(declared, 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]

    for _ in range(3):
        streamed = await tenant.client.post(
            "/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.request.headers["transfer-encoding"] == "chunked"
        assert_error_shape(streamed, 413, "payload_too_large")
    ok = await tenant.client.post("/v1/jobs", json=T2I_PRO)
    assert ok.status_code == 202
    listed = await tenant.client.get("/v1/jobs")
    assert [job["id"] for job in listed.json()["data"]] == [ok.json()["id"]]


@module_loop
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"Authorization": ""}, "missing_api_key"),
        ({"Authorization": "Bearer "}, "missing_api_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_api_key"),
        ({"Authorization": "kgw_live_withoutscheme"}, "missing_api_key"),
        ({"Authorization": "Bearer kgw_live_notakeythatexists0000000000000"}, "invalid_api_key"),
        ({"Authorization": "Bearer sim-key"}, "invalid_api_key"),
    ],
    ids=["none", "empty", "bearer-blank", "basic", "no-scheme", "unknown", "upstream-key"],
)
async def test_missing_or_unknown_key_is_401(
    gw: Gateway, client: TenantHandle, headers: dict[str, str], code: str
) -> None:
    async with httpx.AsyncClient(
        base_url=gw.url, transport=gw.client._transport, headers=headers
    ) as anonymous:
        for method, path, body in (
            ("POST", "/v1/jobs", T2I_MAX),
            ("GET", "/v1/jobs", None),
            ("GET", "/v1/jobs/job_00000000000000000000000000", None),
            ("POST", "/v1/jobs/job_00000000000000000000000000/cancel", None),
            ("GET", "/v1/models", None),
        ):
            response = await anonymous.request(method, path, json=body)
            assert_error_shape(response, 401, code)
            assert client.key not in response.text
    assert sim_of(gw).state.requests == []


@module_loop
async def test_bad_input_without_a_key_is_401_not_422(gw: Gateway) -> None:
    response = await gw.client.post("/v1/jobs", json={"model": "nope"})
    assert_error_shape(response, 401, "missing_api_key")


@module_loop
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/jobs", 404),
        ("GET", "/", 404),
        ("POST", "/v1/job", 404),
        ("GET", "/v1/jobs/job_x/no-such-thing", 404),
        ("DELETE", "/v1/jobs", 405),
        ("GET", "/v1/jobs/job_x/cancel", 405),
    ],
)
async def test_unknown_routes_answer_in_the_error_shape(
    gw: Gateway, client: TenantHandle, method: str, path: str, status: int
) -> None:
    response = await client.client.request(method, path)
    assert_error_shape(response, status)


@module_loop
async def test_unknown_job_is_404_in_the_error_shape(gw: Gateway, client: TenantHandle) -> None:
    response = await client.client.get("/v1/jobs/job_0000000000zzzzzzzzzzzzzzzz")
    assert_error_shape(response, 404, "job_not_found")


@module_loop
@pytest.mark.parametrize(
    "key", ["", "k" * 256, "with\nnewline", "tab\there"], ids=["empty", "too-long", "newline", "tab"]
)
async def test_bad_idempotency_key_is_422(gw: Gateway, client: TenantHandle, key: str) -> None:
    raw = key.encode("latin-1")
    response = await client.client.post(
        "/v1/jobs", json=T2I_MAX, headers=[(b"Idempotency-Key", raw)]  # type: ignore[arg-type]
    )
    assert invalid_fields(response) == {"Idempotency-Key"}
    assert sim_of(gw).state.requests == []
