"""Asking the local Docker engine small questions without starting the docker CLI.

Each `docker ...` command costs tens of milliseconds before it does anything (a Go binary,
its config, its plugins); a build used to start five of them before `docker buildx build`.
When the engine is the local one (no DOCKER_HOST other than a unix socket, no docker context
selected), we ask its API over the unix socket directly: one small HTTP request each, a few
milliseconds. Whenever that is not possible the caller falls back to the CLI, which knows
contexts, TLS and SSH.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flyte_images._errors import EngineUnavailableError

DEFAULT_SOCKET = "/var/run/docker.sock"
_TIMEOUT = 10.0


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=_TIMEOUT)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(_TIMEOUT)
        sock.connect(self._path)
        self.sock = sock


def host_setting() -> str:
    """`DOCKER_HOST=...` when the environment sets where the engine is, for messages (a daemon
    missing there is most often a wrong setting, not a stopped daemon); '' otherwise."""
    host = os.environ.get("DOCKER_HOST", "")
    return f"DOCKER_HOST={host}" if host else ""


def local_socket() -> str | None:
    """The engine's unix socket when the CLI would use it too; None when a context, a TCP or
    SSH host, or a non-default config decides where the engine is (then ask the CLI)."""
    host = os.environ.get("DOCKER_HOST", "")
    if os.environ.get("DOCKER_CONTEXT") not in (None, "", "default"):
        return None
    if host and not host.startswith("unix://"):
        return None
    if not host and _current_context() not in (None, "", "default"):
        return None
    return host.removeprefix("unix://") or DEFAULT_SOCKET


def _current_context() -> str | None:
    config = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    context = data.get("currentContext") if isinstance(data, dict) else None
    return context if isinstance(context, str) else None


def api_get(path: str) -> tuple[int, Any] | None:
    """(status, decoded JSON body) of a GET on the local engine's API; None when the engine is
    not the local socket. Raises EngineUnavailableError when the socket is there but refuses."""
    where = local_socket()
    if where is None:
        return None
    connection = _UnixConnection(where)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    except PermissionError as exc:
        raise EngineUnavailableError(
            f"permission denied on the Docker socket {where}: add your user to the docker group "
            "(usermod -aG docker $USER, then log in again) or run as root"
        ) from exc
    except FileNotFoundError as exc:
        if host_setting():
            raise EngineUnavailableError(
                f"no Docker daemon at {host_setting()} ({where} does not exist): fix DOCKER_HOST, or unset it to "
                f"use the default socket {DEFAULT_SOCKET}"
            ) from exc
        raise EngineUnavailableError(
            f"the Docker daemon is not running ({where} does not exist): start it (systemctl start docker, "
            "or as root without systemd: nohup dockerd >/var/log/dockerd.log 2>&1 &)"
        ) from exc
    except OSError as exc:
        raise EngineUnavailableError(
            f"the Docker daemon does not answer on {where} ({exc.strerror or exc}): start it"
            + (f", or fix {host_setting()}" if host_setting() else "")
        ) from exc
    finally:
        connection.close()
    try:
        return response.status, json.loads(body) if body else None
    except ValueError:
        return response.status, None


def image_exists(reference: str) -> bool | None:
    """Whether the local engine has `reference`; None when it must be asked through the CLI."""
    answer = api_get(f"/images/{quote(reference, safe='')}/json")
    if answer is None:
        return None
    status, _body = answer
    if status == 200:
        return True
    if status == 404:
        return False
    return None


def engine_info() -> dict[str, Any] | None:
    """`docker info` as the API returns it, or None when it must be asked through the CLI."""
    answer = api_get("/info")
    if answer is None or answer[0] != 200 or not isinstance(answer[1], dict):
        return None
    return answer[1]


def engine_platform() -> str | None:
    """The local engine's own platform ("linux/amd64") from its version endpoint (a millisecond,
    where `/info` takes ten); None when it must be asked otherwise, or is a 32-bit ARM, whose
    variant the endpoint does not say."""
    answer = api_get("/version")
    if answer is None or answer[0] != 200 or not isinstance(answer[1], dict):
        return None
    system, arch = answer[1].get("Os"), answer[1].get("Arch")
    if not isinstance(system, str) or not isinstance(arch, str) or not system or not arch or arch == "arm":
        return None
    return f"{system}/{arch}"


def _plugin_folders(config: Path) -> list[Path]:
    """Where the docker CLI looks for its plugins (Linux and macOS), in its order."""
    return [
        config / "cli-plugins",
        Path("/usr/local/lib/docker/cli-plugins"),
        Path("/usr/local/libexec/docker/cli-plugins"),
        Path("/usr/lib/docker/cli-plugins"),
        Path("/usr/libexec/docker/cli-plugins"),
    ]


def _docker_config() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def buildx_installed() -> bool:
    """Whether the buildx CLI plugin is where the docker CLI looks for it (no process started)."""
    return any(os.access(folder / "docker-buildx", os.X_OK) for folder in _plugin_folders(_docker_config()))


def buildx_plugin() -> str | None:
    """The buildx plugin that `docker buildx` runs, to be run by itself (buildx works standalone,
    with the same config, contexts and builders): that skips the docker CLI's own start and its
    plugin discovery, about 40 ms of every build (measured here: 0.73 -> 0.69 s for an
    edit-one-file rebuild). None, and so `docker buildx`, when no docker CLI is on PATH (the
    command then fails as the user would see it fail) or when its config adds plugin folders
    (whose place in the search order differs between CLI versions)."""
    if shutil.which("docker") is None:
        return None
    config = _docker_config()
    try:
        text = (config / "config.json").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    except OSError:
        return None
    if "cliPluginsExtraDirs" in text:
        return None
    for folder in _plugin_folders(config):
        path = folder / "docker-buildx"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def default_builder() -> bool:
    """True when buildx would use the engine's own builder (the `docker` driver): no builder
    selected by BUILDX_BUILDER and none made current with `docker buildx use`."""
    if os.environ.get("BUILDX_BUILDER"):
        return False
    current = Path(os.environ.get("BUILDX_CONFIG") or _docker_config() / "buildx") / "current"
    try:
        data = json.loads(current.read_text())
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    name = data.get("Name") if isinstance(data, dict) else None
    return name in (None, "", "default")
