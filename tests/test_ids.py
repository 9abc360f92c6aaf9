"""gateway.ids: 26 characters of Crockford base32 over 130 bits, strictly increasing in one
process, and id_floor below every id made at or after its time."""

from __future__ import annotations

import time

from gateway.ids import _encode, id_floor, new_id


def test_130_bits_are_26_characters_most_significant_first() -> None:
    assert _encode(0) == "0" * 26
    assert _encode((1 << 130) - 1) == "z" * 26
    assert _encode(1) == "0" * 25 + "1"
    assert _encode(31 << 125) == "z" + "0" * 25
    # Crockford's alphabet has no i, l, o, u.
    assert _encode(sum(n << (5 * (25 - n)) for n in range(26))) == "0123456789abcdefghjkmnpqrs"


def test_ids_are_strictly_increasing_and_above_the_floor_of_their_time() -> None:
    floor = id_floor("job", time.time() - 0.001)
    made = [new_id("job") for _ in range(5000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(len(i) == len("job_") + 26 and i.startswith("job_") for i in made)
    assert floor < made[0]
    assert made[-1] < id_floor("job", time.time() + 1)
