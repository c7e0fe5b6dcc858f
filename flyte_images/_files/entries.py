"""The values a walk yields: an `Entry` per file, folder or symlink, and the `Tree` of them whose
digest a layer's identity takes (kept apart from the walk, so that memos can store and restore
them without the walk)."""

from __future__ import annotations

import hashlib
import marshal
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import SourceError

FILE, DIR, LINK = "file", "dir", "symlink"


@dataclass(frozen=True)
class Entry:
    """One path of a copied tree, relative to the tree's root, '/'-separated."""

    path: str
    kind: str
    mode: int
    digest: str = ""  # sha256 hex of a file's bytes; a symlink's target; "" for a folder
    size: int = 0

    def identity(self) -> tuple[str, str, int, str]:
        return (self.path, self.kind, self.mode, self.digest)


_LEN = struct.Struct(">Q")
_ENTRY_HEAD = b"L" + _LEN.pack(4)


def _text(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return b"S" + _LEN.pack(len(data)) + data


def encode_entries(entries: tuple[Entry, ...]) -> bytes:
    """Exactly `_encoding.encode(tuple(e.identity() for e in entries))`, written out directly
    because it runs once per file of every copied tree."""
    parts = [b"L", _LEN.pack(len(entries))]
    append = parts.append
    kinds = {FILE: _text(FILE), DIR: _text(DIR), LINK: _text(LINK)}
    for e in entries:
        mode = str(e.mode).encode("ascii")
        append(_ENTRY_HEAD)
        append(_text(e.path))
        append(kinds[e.kind])
        append(b"I" + _LEN.pack(len(mode)) + mode)
        append(_text(e.digest))
    return b"".join(parts)


@dataclass(frozen=True)
class Tree:
    """The kept entries of one folder walk."""

    entries: tuple[Entry, ...]

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the canonical encoding of the entries (what an identifier covers)."""
        return hashlib.sha256(encode_entries(self.entries)).hexdigest()

    def identity(self) -> tuple[str, int, str]:
        count = self.__dict__.get("_count")
        return ("tree", len(self.entries) if count is None else count, self.digest)

    @classmethod
    def _stored(cls, count: int, digest: str, packed: bytes, origin: Path) -> Tree:
        """A tree read back from a memo file (see `_load_memo`): its size and digest are known,
        its entries are unpacked from `packed` only when first asked for (an identifier never
        needs them)."""
        tree = cls.__new__(cls)
        object.__setattr__(tree, "_count", count)
        object.__setattr__(tree, "digest", digest)
        object.__setattr__(tree, "_packed", (packed, origin))
        return tree

    if not TYPE_CHECKING:  # only a stored tree lacks `entries` until they are unpacked

        def __getattr__(self, name: str) -> object:
            packed = self.__dict__.get("_packed") if name == "entries" else None
            if packed is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            entries = _unpack_entries(*packed, self.digest)
            object.__setattr__(self, "entries", entries)
            return entries


def _unpack_entries(packed: bytes, origin: Path, digest: str) -> tuple[Entry, ...]:
    """The entries of a memo file (whose checksum held when it was read), checked against the
    tree's digest all the same: they can only ever be the entries that digest describes."""
    try:
        entries = tuple(Entry(*fields) for fields in marshal.loads(packed))
    except (ValueError, EOFError, TypeError):
        entries = None
    if entries is None or hashlib.sha256(encode_entries(entries)).hexdigest() != digest:
        raise SourceError(f"the remembered file list {origin} does not match its digest; delete it and run again")
    return entries
