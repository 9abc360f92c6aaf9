"""WaveSpeed's answers -> data or the gateway's upstream error tree (gateway.upstream.unwrap),
for each shape the contract describes: the envelope, an error code inside a 200, HTTP errors,
and answers that are not JSON at all."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from gateway.upstream import (
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    unwrap,
)


def answer(status: int, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=content, headers=headers)


def test_the_envelope_gives_its_data() -> None:
    response = answer(200, b'{"code": 200, "message": "success", "data": {"id": "p1"}}')
    assert unwrap(response, "submit") == {"id": "p1"}


def test_the_envelope_decides_on_any_2xx() -> None:
    created = answer(201, b'{"code": 200, "message": "success", "data": {"id": "p1"}}')
    assert unwrap(created, "submit") == {"id": "p1"}
    with pytest.raises(UpstreamRejected):
        unwrap(answer(202, b'{"code": 400, "message": "prompt is required"}'), "submit")
    with pytest.raises(UpstreamUnavailable):  # a 2xx that is not the envelope: outcome unknown
        unwrap(answer(204, b""), "submit")


def test_an_error_code_inside_a_200_is_that_error() -> None:
    with pytest.raises(UpstreamRejected) as rejected:
        unwrap(answer(200, b'{"code": 400, "message": "prompt is required"}'), "submit")
    assert rejected.value.upstream_status == 400
    assert "prompt is required" in rejected.value.message


def test_429_waits_as_long_as_retry_after_says() -> None:
    response = answer(429, b'{"code": 429, "message": "slow down"}', {"retry-after": "7"})
    with pytest.raises(UpstreamRateLimited) as limited:
        unwrap(response, "submit")
    assert limited.value.retry_after == 7.0


def test_429_with_retry_after_as_an_http_date() -> None:
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    response = answer(429, b'{"code": 429, "message": "slow down"}', {"retry-after": later})
    with pytest.raises(UpstreamRateLimited) as limited:
        unwrap(response, "submit")
    assert 28 <= limited.value.retry_after <= 30
    unreadable = answer(429, b'{"code": 429, "message": "slow down"}', {"retry-after": "soon"})
    with pytest.raises(UpstreamRateLimited) as limited:
        unwrap(unreadable, "submit")
    assert limited.value.retry_after == 1.0  # the default


def test_5xx_is_unavailable() -> None:
    with pytest.raises(UpstreamUnavailable, match="WaveSpeed answered 503"):
        unwrap(answer(503, b"<html>busy</html>"), "result")


@pytest.mark.parametrize(
    "content",
    [
        b"<html>ok</html>",
        b'{"code": 200, "message": "success"}',
        # NaN is not JSON: taken in, it would be stored and break every view of the job.
        b'{"code": 200, "message": "success", "data": {"id": "p1", "timings": {"inference": NaN}}}',
    ],
    ids=["not-json", "no-data", "nan"],
)
def test_a_200_that_is_not_an_envelope_is_a_protocol_error(content: bytes) -> None:
    with pytest.raises(UpstreamProtocolError, match="not WaveSpeed's envelope"):
        unwrap(answer(200, content), "result")
