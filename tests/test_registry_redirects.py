"""Blob reads behind redirects, as on Docker Hub, GHCR and ECR (a 307 or 302 to a CDN or bucket).

The image lives in a real registry (Debian's docker-registry, basic auth) on loopback. In front
of it stands a fake that forwards manifest requests and answers blob requests with a redirect
to a second fake on another port, standing in for the CDN: it serves the blob and records
whether the registry's Authorization header reached it (it must not).
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from engine_support import free_port
from registry_support import (
    PASSWORD,
    USER,
    FakeServer,
    Seeded,
    basic_registry,
    forward,
    reply,
    seed_image,
)

from flyte_images._registry import Existence, check_many
from flyte_images._registry.record import PlatformCache


def check(refs: list[str], platforms: list[str] | None = None, **kw: object) -> list[Existence]:
    return asyncio.run(check_many(refs, platforms, platform_cache=PlatformCache(None), **kw))  # type: ignore[arg-type]


@pytest.fixture
def private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Seeded, Path]]:
    """A real basic-auth registry with one image, and a private Docker config folder."""
    folder = tmp_path / "docker-config"
    folder.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    with basic_registry() as reg:
        yield reg.host, seed_image(reg.host, "team/app", "v1", auth=(USER, PASSWORD)), folder


def log_in(folder: Path, host: str) -> None:
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))


def cdn_of(upstream: str) -> FakeServer:
    """A fake CDN: serves the registry's blobs (fetched with the test's own login), records the
    headers it was sent."""

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        digest = handler.path.rsplit("/", 1)[-1]
        blob = httpx.get(f"http://{upstream}/v2/team/app/blobs/{digest}", auth=(USER, PASSWORD))
        reply(handler, blob.status_code, blob.content, {"Content-Type": "application/octet-stream"})

    return FakeServer(answer)


def front_of(upstream: str, status: int, target: str) -> FakeServer:
    """A fake registry front: manifests go to the real registry; a blob GET is answered with
    `status` and a Location on `target` (another host:port)."""

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if "/blobs/" in handler.path or handler.path.startswith("/cdn/"):
            reply(handler, status, headers={"Location": f"{target}/cdn/{handler.path.rsplit('/', 1)[-1]}"})
        else:
            forward(handler, upstream)

    return FakeServer(answer)


@pytest.mark.parametrize("status", [307, 302])
def test_a_redirected_config_blob_is_read_without_the_registrys_credentials(
    private: tuple[str, Seeded, Path], status: int
) -> None:
    upstream, seeded, folder = private
    with cdn_of(upstream) as cdn, front_of(upstream, status, f"http://{cdn.host}") as front:
        log_in(folder, front.host)
        (found,) = check([f"{front.host}/team/app:v1"], ["linux/amd64"])
        assert found.state == "exists", found.reason
        assert found.platforms == ("linux/amd64",) and found.digest == seeded.digest
        assert [s.path for s in cdn.seen] == [f"/cdn/{seeded.config_digest}"]
        assert all("Authorization" not in s.headers for s in cdn.seen)
        # ...while the registry itself did get them: there were credentials to leak.
        assert any("Authorization" in s.headers for s in front.seen)


def test_a_401_from_where_a_blob_was_redirected_is_not_answered_with_credentials(
    private: tuple[str, Seeded, Path],
) -> None:
    upstream, _seeded, folder = private
    with FakeServer(lambda h: reply(h, 200, b"{}")) as tokens:
        realm = f'Bearer realm="http://{tokens.host}/token",service="cdn"'
        with (
            FakeServer(lambda h: reply(h, 401, headers={"WWW-Authenticate": realm})) as cdn,
            front_of(upstream, 307, f"http://{cdn.host}") as front,
        ):
            log_in(folder, front.host)
            (found,) = check([f"{front.host}/team/app:v1"], ["linux/amd64"])
            assert (
                found.state == "unknown" and f"{cdn.host}, where {front.host} redirected, answered 401" in found.reason
            )
            assert tokens.seen == []  # no credentials went to a token service the CDN named
            assert all("Authorization" not in s.headers for s in cdn.seen)


def test_a_redirect_loop_and_a_dead_redirect_target_are_unknown(private: tuple[str, Seeded, Path]) -> None:
    upstream, _seeded, folder = private
    with front_of(upstream, 302, "") as loop:  # a relative Location: back to itself, forever
        log_in(folder, loop.host)
        (circle,) = check([f"{loop.host}/team/app:v1"], ["linux/amd64"])
        assert circle.state == "unknown" and "redirected more than 5 times" in circle.reason
    dead = f"127.0.0.1:{free_port()}"
    with front_of(upstream, 307, f"http://{dead}") as to_nowhere:
        log_in(folder, to_nowhere.host)
        (nowhere,) = check([f"{to_nowhere.host}/team/app:v1"], ["linux/amd64"], backoff=0.01)
        assert nowhere.state == "unknown"
        assert f"{dead} (where {to_nowhere.host} redirected) could not be reached" in nowhere.reason
