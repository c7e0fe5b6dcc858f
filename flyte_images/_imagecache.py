"""`ImageCache`: what a deploy needs to know of its images, and its JSON and transport forms.

Both readers take input from outside the process, so any malformed input is an
`ImageCacheError` naming what is wrong, and a transport string can never make us allocate more
than `MAX_TRANSPORT_JSON_BYTES`, however small it is.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import reprlib
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

from ._errors import BuildError, ImageCacheError
from ._formats import shapes as _shapes

# Far above any real deploy (a few KB per environment), far below what hurts a process.
MAX_TRANSPORT_JSON_BYTES = 64 * 1024 * 1024
_INFLATE_CHUNK = 1024 * 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer, not raw deflate or zlib
_SHOWN_ERRORS = 3
_SHOWN_INPUT_CHARS = 60

_JSON_HINT = (
    'expected a JSON object of string maps, as ImageCache.to_json() writes: {"image_lookup": '
    '{"env": "registry/repo:tag"}, "identifiers": {"env": "<hex> or null"}, "digests": '
    '{"env": "sha256:<hex> or null"}, "status": {"env": "built"}, "reasons": {"env": "why"}, '
    '"nodes": {"env": {"linux/amd64": "tcp://bk-1:1234"}}, "waited": {"env": {"linux/amd64": 0.5}}} '
    "(every key optional)"
)
_TRANSPORT_HINT = "pass the string ImageCache.to_transport returned, unchanged"


@dataclass
class _Maps:
    """The data of an ImageCache, and its JSON form as read strictly (`_shapes`): a number where
    a uri belongs is an error, never turned into a string. Unknown keys are ignored, so a cache
    written by a newer version reads."""

    image_lookup: dict[str, str] = field(default_factory=dict)
    identifiers: dict[str, str | None] = field(default_factory=dict)
    digests: dict[str, str | None] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)  # built | exists | reference | planned | failed
    reasons: dict[str, str] = field(default_factory=dict)
    build_run_ids: dict[str, dict[str, str]] = field(default_factory=dict)
    # Where a backend that chooses a BuildKit daemon built each platform, and how long it waited
    # for a build slot there (seconds): name -> platform -> address / seconds; built images only.
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    waited: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class ImageCache(_Maps):
    """What a deploy needs: the image uri of every environment, and how each came about.

    Shaped like the Flyte SDK's ImageCache where code touches it: `image_lookup`,
    `build_run_ids` (env -> the remote build run's {org, project, domain, name}; empty here,
    where nothing is built remotely), `serialized_form` (the transport string it was read from),
    the `to_transport` property and `from_transport`. Either side reads the other's transport
    string (unknown keys are ignored both ways)."""

    # Not data: the string `from_transport` read, handed on unchanged (as the SDK does), so a
    # cache passed along a chain of tasks is the same string at every step.
    serialized_form: str | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> str:
        """Stable JSON: keys sorted, so the same results give the same bytes."""
        data = asdict(self)
        del data["serialized_form"]
        return json.dumps(data, sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ImageCache:
        """Parse `to_json` output; raises ImageCacheError naming the bad field and the expected shape."""
        return cls._parse(text, "ImageCache JSON")

    @property
    def to_transport(self) -> str:
        """gzip (mtime 0, so deterministic) + base64 of the JSON, as the SDK passes it along (a
        property, as in the SDK); the string it was read from when it came `from_transport`."""
        if self.serialized_form:
            return self.serialized_form
        return base64.b64encode(gzip.compress(self.to_json().encode(), mtime=0)).decode()

    @classmethod
    def from_transport(cls, text: str) -> ImageCache:
        """Parse `to_transport` output; raises ImageCacheError if it is not base64, gzip or our JSON."""
        compressed = _unbase64(text)
        cache = cls._parse(_gunzip_bounded(compressed), "ImageCache transport JSON")
        cache.serialized_form = text
        return cache

    @classmethod
    def _parse(cls, text: str | bytearray, what: str) -> ImageCache:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
            problem = _not_json(exc, text)
        else:
            try:
                checked = _shapes.check(_Maps, data)
            except _shapes.Invalid as exc:
                problem = _describe(exc.problems, data)
            else:
                return cls(**asdict(checked))
        # Raised here, not in an except block: a JSONDecodeError holds the whole input.
        raise ImageCacheError(f"{what} is invalid: {problem}; {_JSON_HINT}")


def _not_json(exc: BaseException, text: str | bytearray) -> str:
    if isinstance(exc, json.JSONDecodeError):
        why = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    elif isinstance(exc, UnicodeDecodeError):
        why = f"not UTF-8 at byte {exc.start}"
    elif isinstance(exc, RecursionError):
        why = "nested too deep"
    else:
        why = type(exc).__name__
    shown = text if isinstance(text, str) else bytes(text[:_SHOWN_INPUT_CHARS]).decode("utf-8", "replace")
    return f"top level: Invalid JSON: {why} (got {_shorten(shown)})"


def _describe(problems: list[_shapes.Problem], data: Any) -> str:
    """The first few problems, each as `field.path: what is wrong (got value)`."""
    parts = [f"{'.'.join(map(str, p.path)) or 'top level'}: {p.message} (got {_shorten(_at(data, p.path))})"
             for p in problems[:_SHOWN_ERRORS]]  # fmt: skip
    if len(problems) > _SHOWN_ERRORS:
        parts.append(f"and {len(problems) - _SHOWN_ERRORS} more")
    return "; ".join(parts)


def _at(data: Any, path: _shapes.Path) -> Any:
    """The value at `path` in the decoded JSON (the problem's own, or the object it is missing from)."""
    for part in path:  # only objects: no field of an ImageCache is a list
        if not (isinstance(data, dict) and part in data):
            break
        data = data[part]
    return data


def _shorten(value: Any) -> str:
    if isinstance(value, str):
        value = value[:_SHOWN_INPUT_CHARS]  # cut before repr: it may be megabytes long
    shown = reprlib.repr(value) if isinstance(value, dict | list) else repr(value)
    return shown if len(shown) <= _SHOWN_INPUT_CHARS else shown[: _SHOWN_INPUT_CHARS - 3] + "..."


def _unbase64(text: str) -> bytes:
    # Whitespace may come from line wrapping in an env file or a YAML block; anything else that
    # is not base64 is an error (the default decoder would silently drop it and read garbage).
    if not isinstance(text, str):
        raise ImageCacheError(f"ImageCache transport must be a str, got {type(text).__name__}; {_TRANSPORT_HINT}")
    compact = "".join(text.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageCacheError(
            f"ImageCache transport is not base64 ({exc}; got {_shorten(text)}); {_TRANSPORT_HINT}"
        ) from None


def _gunzip_bounded(compressed: bytes) -> bytearray:
    """Inflate one gzip member a chunk at a time, refusing output beyond the limit (a tiny input
    can expand ~1000x, so the limit must be enforced while inflating, not after)."""
    inflater = zlib.decompressobj(_GZIP_WBITS)
    out = bytearray()
    pending = compressed
    try:
        while not inflater.eof:
            piece = inflater.decompress(pending, _INFLATE_CHUNK)
            pending = inflater.unconsumed_tail
            if len(out) + len(piece) > MAX_TRANSPORT_JSON_BYTES:
                raise ImageCacheError(
                    f"ImageCache transport decompresses to more than {MAX_TRANSPORT_JSON_BYTES // (1024 * 1024)} MiB "
                    f"({len(compressed)} bytes of gzip): refused as corrupt or hostile; {_TRANSPORT_HINT}"
                )
            out += piece
            if not piece and not pending:
                break  # input used up before the end of the gzip stream
    except zlib.error as exc:
        raise ImageCacheError(f"ImageCache transport is not gzip data ({exc}); {_TRANSPORT_HINT}") from None
    if not inflater.eof:
        raise ImageCacheError(
            f"ImageCache transport is truncated: its gzip data ends early after {len(compressed)} bytes; "
            f"{_TRANSPORT_HINT}"
        )
    if inflater.unused_data:
        raise ImageCacheError(
            f"ImageCache transport has {len(inflater.unused_data)} bytes after the end of its gzip data; "
            f"{_TRANSPORT_HINT}"
        )
    return out  # not copied to bytes: json reads a bytearray as it is


class ImagesFailedError(BuildError):
    """Some images of a deploy failed; `cache` (an ImageCache) holds the results of all of them."""

    def __init__(self, cache: ImageCache, uris: dict[str, str] | None = None) -> None:
        self.cache = cache
        self.uris = uris or {}
        failed = [f"  {env}{f' ({self.uris[env]})' if env in self.uris else ''}: {cache.reasons[env]}"
                  for env in sorted(cache.status) if cache.status[env] == "failed"]  # fmt: skip
        super().__init__(f"{len(failed)} image(s) failed:\n" + "\n".join(failed))
