"""Real parts for the engine tests: the local Docker engine and registries on 127.0.0.1.

Tests that need the engine take the `engine` fixture. Where no engine can be used they are
skipped with the reason, except under CI=true, where that is a failure: CI must run them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BASE_IMAGE = "python:3.11-slim-bookworm"
BUSYBOX = "flyte-images/busybox:test"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    checks = [
        (["docker", "info"], "the Docker daemon does not answer"),
        (["docker", "buildx", "version"], "the docker buildx plugin is missing"),
        (["docker", "image", "inspect", BASE_IMAGE], f"the local base image {BASE_IMAGE} is missing"),
        (["docker", "image", "inspect", BUSYBOX], f"the local test image {BUSYBOX} is missing"),
    ]
    for command, problem in checks:
        if subprocess.run(command, capture_output=True, check=False, timeout=120).returncode != 0:
            return problem
    return None


def docker(*args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=600)


def run_in(image: str, script: str, *, entrypoint: str = "/bin/sh") -> str:
    """Run a shell script in a fresh container of `image`; return its stdout."""
    result = docker("run", "--rm", "--entrypoint", entrypoint, image, "-c", script, check=False)
    assert result.returncode == 0, f"container failed ({result.returncode}): {result.stderr}{result.stdout}"
    return result.stdout


def remove_image(uri: str) -> None:
    docker("image", "rm", "-f", uri, check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Registry:
    host: str  # "127.0.0.1:PORT"
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def registry(extra_config: str = "") -> Iterator[Registry]:
    """A real Docker registry (Debian's docker-registry) on 127.0.0.1, removed afterwards."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is not installed (fixtures/engine/setup.sh installs it)"
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fi-registry-") as root:
        config = Path(root) / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root}/data\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n" + extra_config
        )
        process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("docker-registry did not start")
            yield Registry(f"127.0.0.1:{port}", process)
        finally:
            process.terminate()
            process.wait(timeout=10)


def ca_bundle() -> str | None:
    """The host's CA bundle, for builds that reach the package index (TLS-inspecting proxies)."""
    return str(HOST_CA) if HOST_CA.is_file() else None


def set_ca_env() -> None:
    bundle = ca_bundle()
    if bundle and "FLYTE_IMAGES_CA_BUNDLE" not in os.environ:
        os.environ["FLYTE_IMAGES_CA_BUNDLE"] = bundle


def push_busybox_tag(host: str, repository: str, count: int) -> list[str]:
    """Push busybox once, then make `count` distinct images of it through the registry API (each
    with its own config blob, so every tag has its own manifest digest); return the refs."""
    import hashlib
    import json

    import httpx

    first = f"{host}/{repository}:seed"
    docker("tag", BUSYBOX, first)
    docker("push", first)
    base = f"http://{host}/v2/{repository}"
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    seed = httpx.get(f"{base}/manifests/seed", headers={"Accept": accept})
    manifest, media = seed.json(), seed.headers["Content-Type"]
    config = httpx.get(f"{base}/blobs/{manifest['config']['digest']}").json()
    refs = []
    with httpx.Client() as client:
        for i in range(count):
            blob = json.dumps({**config, "comment": f"bench image {i}"}).encode()
            digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
            location = client.post(f"{base}/blobs/uploads/").headers["Location"]
            location = location if location.startswith("http") else f"http://{host}{location}"
            sep = "&" if "?" in location else "?"
            assert client.put(f"{location}{sep}digest={digest}", content=blob).status_code == 201
            body = json.dumps({**manifest, "config": {**manifest["config"], "digest": digest, "size": len(blob)}})
            put = client.put(f"{base}/manifests/{i}", content=body, headers={"Content-Type": media})
            assert put.status_code == 201, put.text
            refs.append(f"{host}/{repository}:{i}")
    return refs
