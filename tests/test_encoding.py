"""The canonical encoding is injective: a decoder written here recovers every value exactly."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from flyte_images._formats.encoding import encode, sha256_hex

_LEN = struct.Struct(">Q")


def _decode(data: bytes, pos: int = 0) -> tuple[Any, int]:
    tag = data[pos : pos + 1]
    pos += 1
    if tag == b"N":
        return None, pos
    if tag in (b"T", b"F"):
        return tag == b"T", pos
    if tag in (b"I", b"S", b"B"):
        (size,) = _LEN.unpack_from(data, pos)
        pos += 8
        raw = data[pos : pos + size]
        assert len(raw) == size
        pos += size
        if tag == b"I":
            return int(raw.decode("ascii")), pos
        if tag == b"S":
            return raw.decode("utf-8", "surrogatepass"), pos
        return bytes(raw), pos
    if tag == b"L":
        (count,) = _LEN.unpack_from(data, pos)
        pos += 8
        items = []
        for _ in range(count):
            item, pos = _decode(data, pos)
            items.append(item)
        return tuple(items), pos
    if tag == b"D":
        (count,) = _LEN.unpack_from(data, pos)
        pos += 8
        out = {}
        for _ in range(count):
            key, pos = _decode(data, pos)
            value, pos = _decode(data, pos)
            out[key] = value
        return out, pos
    raise AssertionError(f"unknown tag {tag!r} at {pos - 1}")


def decode(data: bytes) -> Any:
    value, end = _decode(data)
    assert end == len(data), "trailing bytes: the encoding is not self-delimiting"
    return value


def _typed(value: Any) -> Any:
    """A structure in which True and 1 (equal in Python) compare differently."""
    if isinstance(value, bool) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, (tuple, list)):
        return ("seq", tuple(_typed(v) for v in value))
    if isinstance(value, dict):
        return ("map", tuple(sorted((k, _typed(v)) for k, v in value.items())))
    return (type(value).__name__, value)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text()
    | st.binary()
    | st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5).map(tuple) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=25,
)


@given(values)
def test_decoding_recovers_every_value(value: Any) -> None:
    assert _typed(decode(encode(value))) == _typed(value)


@given(values, values)
def test_different_values_never_share_an_encoding(a: Any, b: Any) -> None:
    if _typed(a) != _typed(b):
        assert encode(a) != encode(b)


def test_adversarial_pairs_differ() -> None:
    pairs = [
        (("ab", "c"), ("a", "bc")),
        ("a/bc", "ab/c"),
        (("a/bc", b"x"), ("ab/c", b"x")),
        ((1, 23), (12, 3)),
        ("", None),
        ((), ((),)),
        (("numpy", "pandas"), ("numpypandas",)),
        (b"1", 1),
        ("1", 1),
        (True, 1),
        ({"a": "b"}, ("a", "b")),
    ]
    for left, right in pairs:
        assert encode(left) != encode(right), (left, right)
        assert sha256_hex(left) != sha256_hex(right)


def test_dict_order_does_not_matter() -> None:
    assert encode({"b": 1, "a": 2}) == encode({"a": 2, "b": 1})
