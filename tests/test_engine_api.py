"""The local engine asked over its socket (builders/_engine.py), against a small fake engine API
served on a unix socket in the test (named as a fake: it answers only the three requests used)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from socketserver import ThreadingUnixStreamServer

import pytest

from flyte_images import EngineUnavailableError
from flyte_images.builders import _engine


class FakeEngineAPI(BaseHTTPRequestHandler):
    """A fake Docker engine API: /_ping, /version, /info and /images/<ref>/json for one known image."""

    arch = "arm64"

    def address_string(self) -> str:  # a unix socket has no client address
        return "fake"

    def do_GET(self) -> None:
        if self.path == "/_ping":
            self._send(200, b"OK")
        elif self.path == "/version":
            self._send(200, json.dumps({"Os": "linux", "Arch": FakeEngineAPI.arch}).encode())
        elif self.path == "/info":
            self._send(200, json.dumps({"Architecture": "x86_64", "Name": "host"}).encode())
        elif self.path == "/images/known%3A1/json":
            self._send(200, json.dumps({"Id": "sha256:abc"}).encode())
        else:
            self._send(404, b'{"message": "No such image"}')

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def fake_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "docker.sock"
    server = ThreadingUnixStreamServer(str(path), FakeEngineAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()


def test_images_and_info_are_asked_over_the_socket(fake_engine: Path) -> None:
    assert _engine.image_exists("known:1") is True
    assert _engine.image_exists("unknown:1") is False
    assert (_engine.engine_info() or {})["Architecture"] == "x86_64"


def test_a_remote_host_or_a_context_is_left_to_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2376")
    assert _engine.local_socket() is None and _engine.image_exists("x:1") is None
    monkeypatch.setenv("DOCKER_HOST", "")
    monkeypatch.setenv("DOCKER_CONTEXT", "remote-builder")
    assert _engine.local_socket() is None


def test_a_missing_default_socket_says_the_daemon_is_not_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # no current context of the user's
    monkeypatch.setattr(_engine, "DEFAULT_SOCKET", str(tmp_path / "gone.sock"))
    with pytest.raises(EngineUnavailableError, match=r"not running.*start it") as info:
        _engine.api_get("/_ping")
    assert "DOCKER_HOST" not in str(info.value)


def test_a_missing_socket_named_by_docker_host_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'gone.sock'}")
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    with pytest.raises(EngineUnavailableError, match=r"DOCKER_HOST=unix://.*gone\.sock.*fix DOCKER_HOST") as info:
        _engine.api_get("/_ping")
    assert "systemctl" not in str(info.value)


def test_permission_denied_on_the_socket_says_so(fake_engine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise PermissionError(13, "Permission denied")  # root cannot be refused for real

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(EngineUnavailableError, match=r"permission denied on the Docker socket.*docker group"):
        _engine.api_get("/_ping")


def test_the_engines_platform_comes_from_its_version(fake_engine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _engine.engine_platform() == "linux/arm64"
    monkeypatch.setattr(FakeEngineAPI, "arch", "arm")  # 32-bit ARM: the variant is not said, so not known
    assert _engine.engine_platform() is None


def test_builds_run_the_buildx_plugin_the_docker_cli_would_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`docker buildx build` costs the docker CLI's start and plugin discovery; the plugin is run
    by itself when it is where the CLI finds it first, and never when the CLI could look elsewhere."""
    config, bin_dir = tmp_path / "config", tmp_path / "bin"
    plugin = config / "cli-plugins" / "docker-buildx"
    plugin.parent.mkdir(parents=True)
    bin_dir.mkdir()
    for path in (plugin, bin_dir / "docker"):
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("PATH", str(bin_dir))
    assert _engine.buildx_plugin() == str(plugin)
    assert _engine.buildx_installed()
    (config / "config.json").write_text(json.dumps({"cliPluginsExtraDirs": [str(tmp_path / "elsewhere")]}))
    assert _engine.buildx_plugin() is None  # the CLI's search order then depends on its version
    (config / "config.json").write_text("{}")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert _engine.buildx_plugin() is None  # no docker CLI: `docker buildx` fails as users see it
    monkeypatch.setenv("PATH", str(bin_dir))
    plugin.chmod(0o644)
    found = _engine.buildx_plugin()
    assert found != str(plugin) and (found is None or Path(found).name == "docker-buildx")
