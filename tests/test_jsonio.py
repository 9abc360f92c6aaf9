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
