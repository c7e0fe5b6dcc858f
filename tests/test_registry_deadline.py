"""The overall deadline of a check: a server that drips one byte every 2 s never trips a per-read
timeout, so only the deadline (`deadline=`, FLYTE_IMAGES_REGISTRY_TIMEOUT) ends the wait.

The drip servers are fakes (no real registry can be slowed on demand); the image that answers
in time lives in a real registry (Debian's docker-registry) on loopback, asked in the same batch.
"""

from __future__ import annotations

import asyncio
import http.server
import time
from collections.abc import Iterator

import pytest
from registry_support import MANIFEST_TYPE, FakeServer, Seeded, seeded_registry

from flyte_images import _errors
from flyte_images._cli import main
from flyte_images._registry import Existence, Registry, check_many
from flyte_images._registry.record import PlatformCache

DRIP_EVERY = 2.0


def check(refs: list[str], platforms: list[str] | None = None, **kw: object) -> list[Existence]:
    return asyncio.run(check_many(refs, platforms, platform_cache=PlatformCache(None), **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def real() -> Iterator[Seeded]:
    with seeded_registry() as seeded:
        yield seeded


def dripping(headers_too: bool) -> FakeServer:
    """A fake registry that sends its answer one byte every 2 s: the status line and headers
    too (`headers_too`), or headers at once and then the body."""
    head = f"HTTP/1.0 200 OK\r\nContent-Type: {MANIFEST_TYPE}\r\nContent-Length: 200\r\n\r\n".encode()

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        slow = head + b"{" * 200 if headers_too else b"{" * 200
        if not headers_too:
            handler.wfile.write(head)
        for byte in slow[:30]:  # a minute at most; the client is long gone by then
            time.sleep(DRIP_EVERY)
            handler.wfile.write(bytes([byte]))

    return FakeServer(answer)


@pytest.mark.parametrize(
    ("headers_too", "platforms"), [(True, None), (False, ["linux/amd64"])], ids=["status-line", "body"]
)
def test_a_dripping_server_is_unknown_within_the_deadline(
    real: Seeded, headers_too: bool, platforms: list[str] | None
) -> None:
    with dripping(headers_too) as drip:
        start = time.monotonic()
        slow, fine = check([f"{drip.host}/team/app:v1", real.reference], platforms, deadline=1.5)
        elapsed = time.monotonic() - start
    assert slow.state == "unknown" and "timed out after 1.5 s" in slow.reason
    assert "FLYTE_IMAGES_REGISTRY_TIMEOUT" in slow.reason
    assert fine.state == "exists"
    assert 1.4 < elapsed < 1.5 + 1.0, elapsed


def test_the_deadline_comes_from_the_environment(real: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_REGISTRY_TIMEOUT", "1")
    with dripping(True) as drip:
        start = time.monotonic()
        (slow,) = check([f"{drip.host}/team/app:v1"])
        elapsed = time.monotonic() - start
    assert slow.state == "unknown" and "timed out after 1 s" in slow.reason
    assert elapsed < 2.0, elapsed


def test_the_default_deadline_is_well_under_a_minute() -> None:
    from flyte_images._registry.transport import DEFAULT_DEADLINE

    assert DEFAULT_DEADLINE <= 30


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan", "inf"])
def test_a_bad_deadline_setting_names_the_value_and_the_fix(
    value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_REGISTRY_TIMEOUT", value)
    with pytest.raises(_errors.ConfigError, match=rf"FLYTE_IMAGES_REGISTRY_TIMEOUT='{value}' is not a number"):
        Registry()
    assert main(["exists", "127.0.0.1:1/team/app:v1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: FLYTE_IMAGES_REGISTRY_TIMEOUT=")
    monkeypatch.delenv("FLYTE_IMAGES_REGISTRY_TIMEOUT")
    with pytest.raises(_errors.ConfigError, match=r"deadline='-1\.0' is not a number of seconds above 0"):
        Registry(deadline=-1.0)
