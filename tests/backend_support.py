"""Adapters that let one conformance suite look inside what each backend built.

Each adapter wraps a backend and answers, in that backend's own terms: what bytes and mode a
file has in a built image, what labels it has, and what a registry received from a push.

Also the real BuildKit daemon the buildkit backend runs on: the one fixtures/engine/buildkit.sh
started (`require_buildkit`), a private one a test may stop and wipe (`PrivateDaemon`), and a
client certificate no CA of the daemon signed (`self_signed`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from flyte_images._config import BuildkitSettings
from flyte_images.builders.base import Builder
from flyte_images.builders.buildkit import BuildkitBuilder
from flyte_images.builders.docker import DockerBuilder
from flyte_images.builders.fake import FakeBuilder

BUSYBOX = "flyte-images/busybox:test"
_MANIFESTS = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def unique(name: str) -> str:
    """A reference no earlier run used (so no cache or leftover image can answer for it)."""
    return f"fi-conformance-{name}:{uuid.uuid4().hex[:12]}"


@dataclass
class FakeBackend:
    """The in-memory fake: everything is read from its store."""

    builder: FakeBuilder = field(default_factory=lambda: FakeBuilder(bases={BUSYBOX}))
    registry: str = "registry.fake.test:5000"

    def tag(self, name: str, pushed: bool = False) -> str:
        return f"{self.registry}/{unique(name)}" if pushed else unique(name)

    def read_file(self, reference: str, path: str) -> bytes:
        return self.builder.store[reference].files[path]

    def file_mode(self, reference: str, path: str) -> int:
        return self.builder.store[reference].modes[path]

    def labels(self, reference: str) -> dict[str, str]:
        return dict(self.builder.store[reference].labels)

    def pushed_digest(self, reference: str) -> str | None:
        image = self.builder.pushed.get(reference)
        return image.digest if image else None

    def cleanup(self) -> None:
        pass


@dataclass
class DockerBackend:
    """The local Docker engine: images are inspected with docker, pushes at the registry over HTTP."""

    registry_host: Callable[[], str]
    builder: Builder = field(default_factory=DockerBuilder)
    made: list[str] = field(default_factory=list)

    @property
    def registry(self) -> str:
        return self.registry_host()

    def _run(self, *args: str) -> bytes:
        done = subprocess.run(["docker", *args], capture_output=True, check=False, timeout=300)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    def tag(self, name: str, pushed: bool = False) -> str:
        reference = f"{self.registry}/{unique(name)}" if pushed else unique(name)
        self.made.append(reference)  # removed from the engine afterwards
        return reference

    def read_file(self, reference: str, path: str) -> bytes:
        return self._run("run", "--rm", "--entrypoint", "cat", reference, path)

    def file_mode(self, reference: str, path: str) -> int:
        return int(self._run("run", "--rm", "--entrypoint", "stat", reference, "-c", "%a", path).decode(), 8)

    def labels(self, reference: str) -> dict[str, str]:
        labels = json.loads(self._run("image", "inspect", "--format", "{{json .Config.Labels}}", reference))
        return dict(labels or {})

    def pushed_digest(self, reference: str) -> str | None:
        """The digest the registry serves for the tag, asked over its HTTP API."""
        host, _, rest = reference.partition("/")
        repository, _, tag = rest.rpartition(":")
        answer = httpx.head(f"http://{host}/v2/{repository}/manifests/{tag}", headers={"Accept": _MANIFESTS})
        return answer.headers.get("Docker-Content-Digest") if answer.status_code == 200 else None

    def cleanup(self) -> None:
        for reference in self.made:
            subprocess.run(["docker", "image", "rm", "-f", reference], capture_output=True, check=False)


@dataclass
class BuildkitBackend(DockerBackend):
    """A BuildKit daemon (buildkit backend): it loads what it builds into the local Docker engine,
    so images are looked at as the Docker backend's are; pushes at the registry over HTTP."""

    builder: Builder = field(default_factory=BuildkitBuilder)


Backend = FakeBackend | DockerBackend | BuildkitBackend


# ----- the BuildKit daemon of fixtures/engine/buildkit.sh ----------------------------------------

BUILDKIT_ENV = Path("/var/lib/flyte-images-engine/buildkit/env")


@dataclass(frozen=True)
class BuildkitDaemon:
    """The buildkitd that fixtures/engine/buildkit.sh started, as its env file describes it."""

    unix_addr: str
    tcp_addr: str
    ca: str
    cert: str
    key: str
    server_name: str
    mirror: str  # host:port of the registry the daemon uses as its docker.io mirror
    buildkitd: str
    buildctl: str
    config: str

    def settings(self, tcp: bool = False) -> BuildkitSettings:
        if not tcp:
            return BuildkitSettings(self.unix_addr)
        return BuildkitSettings(self.tcp_addr, self.ca, self.cert, self.key, self.server_name)

    def use(self, monkeypatch: pytest.MonkeyPatch, tcp: bool = False) -> None:
        """Point the buildkit backend's settings (environment variables) at this daemon."""
        chosen = self.settings(tcp)
        for name in ("addr", "ca", "cert", "key", "server_name"):
            value = getattr(chosen, name)
            variable = f"FLYTE_IMAGES_BUILDKIT_{name.upper()}"
            if value:
                monkeypatch.setenv(variable, value)
            else:
                monkeypatch.delenv(variable, raising=False)


def buildkit_problem() -> BuildkitDaemon | str:
    """The daemon, or why it cannot be used."""
    if not BUILDKIT_ENV.is_file():
        return f"{BUILDKIT_ENV} does not exist"
    values = dict(line.split("=", 1) for line in BUILDKIT_ENV.read_text().splitlines() if "=" in line)
    try:
        daemon = BuildkitDaemon(
            unix_addr=values["BUILDKIT_UNIX_ADDR"],
            tcp_addr=values["BUILDKIT_TCP_ADDR"],
            ca=values["BUILDKIT_CA"],
            cert=values["BUILDKIT_CERT"],
            key=values["BUILDKIT_KEY"],
            server_name=values["BUILDKIT_SERVER_NAME"],
            mirror=values["BUILDKIT_MIRROR"],
            buildkitd=values["BUILDKITD"],
            buildctl=values["BUILDCTL"],
            config=values["BUILDKITD_CONFIG"],
        )
    except KeyError as exc:
        return f"{BUILDKIT_ENV} has no {exc.args[0]}"
    workers = subprocess.run(
        [daemon.buildctl, "--addr", daemon.unix_addr, "debug", "workers"], capture_output=True, check=False, timeout=60
    )
    if workers.returncode != 0:
        return f"buildkitd at {daemon.unix_addr} does not answer"
    try:
        httpx.get(f"http://{daemon.mirror}/v2/", timeout=5).raise_for_status()
    except httpx.HTTPError:
        return f"the base-image registry {daemon.mirror} does not answer"
    return daemon


def require_buildkit() -> BuildkitDaemon:
    """The daemon, or a skip with the reason (a failure under CI, which must run these tests)."""
    found = buildkit_problem()
    if isinstance(found, BuildkitDaemon):
        return found
    if os.environ.get("CI"):
        pytest.fail(f"the buildkit tests must run in CI, but {found}; fixtures/engine/buildkit.sh sets it up")
    pytest.skip(f"no BuildKit daemon: {found} (run `bash fixtures/engine/setup.sh` as root)")


@dataclass
class PrivateDaemon:
    """A buildkitd of this test alone (own socket, own state), to stop and wipe at will."""

    shared: BuildkitDaemon
    home: Path
    log: Path = field(init=False)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.log = self.home / "buildkitd.log"

    @property
    def addr(self) -> str:
        return f"unix://{self.home}/buildkitd.sock"

    @property
    def root(self) -> Path:
        return self.home / "root"

    def start(self) -> None:
        command = [self.shared.buildkitd, "--config", self.shared.config, "--root", str(self.root)]
        command += ["--addr", self.addr, "--oci-worker-net=host", "--containerd-worker=false"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            probe = [self.shared.buildctl, "--addr", self.addr, "debug", "workers"]
            if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"the private buildkitd did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def records(self) -> list[str]:
        """What the daemon holds in its build cache (`buildctl du`)."""
        command = [self.shared.buildctl, "--addr", self.addr, "du", "--verbose"]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        return [line for line in out.splitlines() if line.startswith("ID:")]

    def wipe(self) -> None:
        """Stop it, remove all its state, start it again: a fresh runner's empty daemon."""
        self.stop()
        shutil.rmtree(self.root)
        self.start()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A client certificate no CA of the daemon signed."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from registry_support import self_signed_files

    client = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    return self_signed_files(folder, "intruder", "intruder", (client, False))
