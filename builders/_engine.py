"""Asking the local Docker engine small questions, over its unix socket where it can.

Each `docker ...` command costs tens of milliseconds before it does anything (a Go binary, its
config, its plugins). When the engine is the local one (no DOCKER_HOST other than a unix socket,
no docker context selected), its API is asked over the socket: a few milliseconds. Otherwise the
caller falls back to the CLI (`cli`), which knows contexts, TLS and SSH.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flyte_images import _config
from flyte_images._errors import EngineUnavailableError

DEFAULT_SOCKET = "/var/run/docker.sock"
_TIMEOUT = 10.0


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


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`docker ARGS` run to its end, its output captured (a minute at most)."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=60)


def _current_context() -> str | None:
    try:
        data = json.loads((_docker_config() / "config.json").read_text())
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
    connection = http.client.HTTPConnection("localhost", timeout=_TIMEOUT)
    try:
        connection.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # HTTP over the unix socket
        connection.sock.settimeout(_TIMEOUT)
        connection.sock.connect(where)
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
    return {200: True, 404: False}.get(answer[0]) if answer else None


def engine_info() -> dict[str, Any] | None:
    """`docker info` as the API returns it, or None when it must be asked through the CLI."""
    answer = api_get("/info")
    return answer[1] if answer and answer[0] == 200 and isinstance(answer[1], dict) else None


def engine_platform() -> str | None:
    """The local engine's own platform ("linux/amd64") from its version endpoint (a millisecond,
    where `/info` takes ten); None when it must be asked otherwise, or is a 32-bit ARM, whose
    variant the endpoint does not say."""
    answer = api_get("/version")
    if not answer or answer[0] != 200 or not isinstance(answer[1], dict):
        return None
    system, arch = answer[1].get("Os"), answer[1].get("Arch")
    if not isinstance(system, str) or not isinstance(arch, str) or not system or not arch or arch == "arm":
        return None
    return f"{system}/{arch}"


def _docker_config() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def _installed_plugin(config: Path) -> str | None:
    """The buildx plugin in the first folder the docker CLI looks in (Linux and macOS)."""
    system = ("local/lib", "local/libexec", "lib", "libexec")
    for folder in [config / "cli-plugins", *(Path(f"/usr/{where}/docker/cli-plugins") for where in system)]:
        path = folder / "docker-buildx"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def buildx_installed() -> bool:
    """Whether the buildx CLI plugin is where the docker CLI looks for it (no process started)."""
    return _installed_plugin(_docker_config()) is not None


def buildx_plugin() -> str | None:
    """The buildx plugin that `docker buildx` runs, to be run by itself (buildx works standalone,
    with the same config, contexts and builders): that skips the docker CLI's own start and its
    plugin discovery, about 40 ms of every build. None, and so `docker buildx`, when no docker
    CLI is on PATH (the command then fails as the user would see it fail) or when its config
    adds plugin folders (whose place in the search order differs between CLI versions)."""
    if shutil.which("docker") is None:
        return None
    config = _docker_config()
    try:
        text = (config / "config.json").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    except OSError:
        return None
    return None if "cliPluginsExtraDirs" in text else _installed_plugin(config)


def selected_builder() -> str | None:
    """The buildx builder named for the docker backend's builds: the `buildx_builder` setting,
    else BUILDX_BUILDER; None when buildx picks (`docker buildx use`, else the engine's)."""
    return _config.configured_buildx_builder() or os.environ.get("BUILDX_BUILDER") or None


def default_builder() -> bool:
    """True when buildx would use the engine's own builder (the `docker` driver): no builder
    named (`selected_builder`) and none made current with `docker buildx use`."""
    if selected_builder():
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
