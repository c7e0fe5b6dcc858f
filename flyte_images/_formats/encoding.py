"""Canonical, injective byte encoding of plain values, the input of every identifier.

Each value is written as a one-byte type tag followed by its payload; every variable-length
payload is preceded by its length as an unsigned 64-bit big-endian integer:

    None   -> b"N"
    False  -> b"F"           True -> b"T"
    int    -> b"I" len ascii-decimal
    str    -> b"S" len utf-8 (surrogatepass, so any Python str, even a mis-decoded file name, encodes)
    bytes  -> b"B" len raw
    tuple  -> b"L" count item item ...        (lists are encoded as tuples)
    dict   -> b"D" count key value ...        (pairs sorted by the encoding of the key)

Because every item carries its type and length, the code is prefix-free: no two different
values share an encoding, so ("ab", "c") and ("a", "bc") differ, and so do "a/bc" and "ab/c"
inside any structure. Nothing here depends on the process (no `hash()`, no dict order, no
locale), so the same value encodes to the same bytes on every machine and every run.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Union

Encodable = Union[  # noqa: UP007 - the recursive alias needs forward references
    None, bool, int, str, bytes, tuple["Encodable", ...], list["Encodable"], Mapping[str, "Encodable"]
]

_LEN = struct.Struct(">Q")


def _write(value: object, out: list[bytes]) -> None:
    if value is None:
        out.append(b"N")
    elif value is True:
        out.append(b"T")
    elif value is False:
        out.append(b"F")
    elif isinstance(value, int):
        text = str(value).encode("ascii")
        out += (b"I", _LEN.pack(len(text)), text)
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        out += (b"S", _LEN.pack(len(data)), data)
    elif isinstance(value, bytes):
        out += (b"B", _LEN.pack(len(value)), value)
    elif isinstance(value, (tuple, list)):
        out += (b"L", _LEN.pack(len(value)))
        for item in value:
            _write(item, out)
    elif isinstance(value, Mapping):
        pairs = sorted((encode(k), v) for k, v in value.items())
        out += (b"D", _LEN.pack(len(pairs)))
        for key_bytes, item in pairs:
            out.append(key_bytes)
            _write(item, out)
    else:
        raise TypeError(f"cannot encode a value of type {type(value).__name__} canonically: {value!r}")


def encode(value: Encodable) -> bytes:
    """Return the canonical encoding of `value` (see the module docstring)."""
    out: list[bytes] = []
    _write(value, out)
    return b"".join(out)


def sha256_hex(value: Encodable) -> str:
    """SHA-256 of the canonical encoding of `value`, as lowercase hex."""
    return hashlib.sha256(encode(value)).hexdigest()
