"""gateway.jsonio: what is read can always be written back, and what is written is JSON."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from gateway import jsonio
from gateway.jsonio import MAX_DEPTH


def nested_array(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_nesting_is_read_up_to_the_limit(as_bytes: bool) -> None:
    for levels, accepted in ((MAX_DEPTH, True), (MAX_DEPTH + 1, False), (20_000, False)):
        text = nested_array(levels)
        data = text.encode() if as_bytes else text
        if accepted:
            assert jsonio.loads(data) == json.loads(text)
        else:
            with pytest.raises(ValueError, match="nested deeper than"):
                jsonio.loads(data)


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = json.dumps({"prompt": "[{" * 500, "wide": [[1], [2]] * 100})
    assert jsonio.loads(text)["prompt"] == "[{" * 500


@pytest.mark.parametrize("text", ["NaN", '{"a": Infinity}', "[-Infinity]"])
def test_non_finite_numbers_are_not_json(text: str) -> None:
    with pytest.raises(ValueError, match="is not valid JSON"):
        jsonio.loads(text)


def test_what_was_read_is_written_back_as_the_same_json() -> None:
    value = {"s": "é \u2028 \x00", "n": [0, -1, 2**70, 3.5, 0.1, 1e22], "t": True, "z": None}
    assert json.loads(jsonio.dumps(value)) == value
    assert jsonio.dumps_bytes(value) == json.dumps(
        value, ensure_ascii=False, separators=(",", ":")
    ).encode()


def test_values_json_cannot_carry() -> None:
    assert jsonio.dumps(float("nan")) == "null"
    assert jsonio.dumps({"at": object()}, fallback=lambda v: "obj") == '{"at":"obj"}'
    assert jsonio.dumps(Decimal("0.40")) == '"0.40"'


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"a": 1e400}', "out of range"),
        ('["\\ud800"]', "unpaired surrogate"),
        ('{"\\uDC00x": 1}', "unpaired surrogate"),
        ('{"a": ["ok", {"b": "\\udbff"}]}', "unpaired surrogate"),
    ],
)
def test_values_that_could_not_be_written_are_refused(text: str, why: str) -> None:
    for data in (text, text.encode()):
        with pytest.raises(ValueError, match=why):
            jsonio.loads(data)


def test_surrogate_pairs_and_large_numbers_are_read() -> None:
    value = jsonio.loads(b'{"fox": "\\ud83e\\udd8a", "big": 123456789012345678901234567890, "f": 1e300}')
    assert value == {"fox": "\U0001f98a", "big": 123456789012345678901234567890, "f": 1e300}
    assert jsonio.loads(jsonio.dumps(value)) == value


def test_bytes_are_strict_utf8_with_an_optional_bom() -> None:
    assert jsonio.loads(b'\xef\xbb\xbf{"a": "\xc3\xa9"}') == {"a": "\u00e9"}
    with pytest.raises(UnicodeDecodeError):
        jsonio.loads(b'["\xed\xa0\x80"]')  # U+D800 encoded: json.loads would read it


def test_what_only_the_standard_library_can_write_is_still_written() -> None:
    # Reading refuses these; rows stored before it did, and log lines, may still hold them.
    assert jsonio.dumps({"a": "x\ud800"}) == '{"a":"x\\ud800"}'
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    assert json.loads(jsonio.dumps(deep)) == deep
    with pytest.raises(ValueError):
        jsonio.dumps({"a": "\ud800", "b": float("nan")})
