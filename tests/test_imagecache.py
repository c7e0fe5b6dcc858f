"""ImageCache readers: malformed input is a typed error naming the problem; memory stays bounded."""

from __future__ import annotations

import base64
import gzip
import subprocess
import sys
import tracemalloc
import zlib

import pytest

from flyte_images._errors import FlyteImagesError, ImageCacheError
from flyte_images._imagecache import MAX_TRANSPORT_JSON_BYTES, ImageCache

MiB = 1024 * 1024


def sample() -> ImageCache:
    return ImageCache(
        image_lookup={"train": "ghcr.io/org/train:abc", "serve": "ghcr.io/org/serve:def"},
        identifiers={"train": "abc", "serve": None},
        digests={"train": "sha256:" + "0" * 64, "serve": None},
        status={"train": "built", "serve": "reference"},
        reasons={"train": "new source", "serve": "given by uri"},
    )


def test_round_trips_are_byte_identical() -> None:
    cache = sample()
    text = cache.to_json()
    assert ImageCache.from_json(text) == cache
    assert ImageCache.from_json(text).to_json() == text
    transport = cache.to_transport
    assert ImageCache.from_transport(transport) == cache
    assert ImageCache.from_transport(transport).to_transport == transport == sample().to_transport
    assert ImageCache.from_json("{}") == ImageCache()


def test_where_images_were_built_reads_back() -> None:
    cache = ImageCache(nodes={"app": {"linux/arm64": "tcp://bk-arm:1234"}}, waited={"app": {"linux/arm64": 1.5}})
    assert ImageCache.from_json(cache.to_json()) == cache
    assert ImageCache.from_json('{"waited": {"app": {"linux/amd64": 2}}}').waited == {"app": {"linux/amd64": 2.0}}


def test_unknown_keys_are_ignored() -> None:
    assert ImageCache.from_json('{"image_lookup": {"a": "x:1"}, "added_later": 1}').image_lookup == {"a": "x:1"}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[]", "top level: Input should be an object"),
        ("null", "top level: Input should be an object"),
        ('{"image_lookup": 5}', "image_lookup: Input should be an object"),
        ('{"identifiers": {"env": 3}}', "identifiers.env: Input should be a valid string"),
        ('{"status": {"env": null}}', "status.env: Input should be a valid string"),
        ('{"waited": {"env": {"linux/amd64": true}}}', "waited.env.linux/amd64: Input should be a valid number"),
        ('{"nodes": {"env": {"linux/amd64": 1}}}', "nodes.env.linux/amd64: Input should be a valid string"),
        ("not json", "Invalid JSON"),
        ("", "Invalid JSON"),
    ],
)
def test_from_json_names_the_problem_and_the_expected_shape(text: str, where: str) -> None:
    with pytest.raises(ImageCacheError) as info:
        ImageCache.from_json(text)
    message = str(info.value)
    assert where in message
    assert "ImageCache.to_json()" in message and '"image_lookup"' in message
    assert isinstance(info.value, FlyteImagesError) and isinstance(info.value, ValueError)


def test_reading_a_cache_loads_no_validation_library() -> None:
    """A task that reads the cache it was handed pays no import for checking it."""
    code = (
        "import sys; from flyte_images._imagecache import ImageCache; "
        f"ImageCache.from_transport({sample().to_transport!r}); print('pydantic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_existing_value_error_handlers_still_catch_it() -> None:
    with pytest.raises(ValueError, match="image_lookup"):
        ImageCache.from_json('{"image_lookup": []}')


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not base64!", "not base64"),
        ("abc", "not base64"),  # bad padding
        ("é", "not base64"),
        (b64(b"plain text, not gzip"), "not gzip"),
        (b64(gzip.compress(b"{}", mtime=0)[:-6]), "truncated"),
        (b64(gzip.compress(b"{}", mtime=0) + b"junk"), "after the end of its gzip data"),
        (b64(gzip.compress(b"[1, 2]", mtime=0)), "transport JSON is invalid: top level"),
        (b64(gzip.compress(b"\xff\xfe", mtime=0)), "Invalid JSON"),
    ],
)
def test_from_transport_refuses_malformed_input(text: str, problem: str) -> None:
    with pytest.raises(ImageCacheError, match=problem) as info:
        ImageCache.from_transport(text)
    assert "ImageCache" in str(info.value)


def test_from_transport_accepts_wrapped_base64() -> None:
    transport = sample().to_transport
    wrapped = "\n".join(transport[i : i + 20] for i in range(0, len(transport), 20)) + "\n"
    assert ImageCache.from_transport(wrapped) == sample()


def gzip_of_zeros(size: int) -> bytes:
    """A gzip member of `size` zero bytes, built a chunk at a time (never `size` bytes at once)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(MiB)
    parts = [deflater.compress(chunk) for _ in range(size // MiB)]
    return b"".join([*parts, deflater.flush()])


def test_a_decompression_bomb_is_refused_with_bounded_memory() -> None:
    bomb = b64(gzip_of_zeros(200 * MiB))
    assert len(bomb) < 1 * MiB
    tracemalloc.start()
    try:
        with pytest.raises(ImageCacheError, match="more than 64 MiB"):
            ImageCache.from_transport(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MAX_TRANSPORT_JSON_BYTES + 16 * MiB  # stopped at the limit, far below 200 MiB
