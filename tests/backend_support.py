"""The real BuildKit daemon the buildkit backend runs on in tests: the one
fixtures/engine/buildkit.sh started (`require_buildkit`), a private one a test may stop and wipe
(`PrivateDaemon`), and a client certificate no CA of the daemon signed (`self_signed`). The
conformance suite's adapters ship in the package (flyte_images.testing.adapters).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from flyte_images._config import BuildkitSettings

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
        stop_process(self.process)
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


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a daemon this test support started: asked first, killed after 30 s."""
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A client certificate no CA of the daemon signed."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from registry_support import self_signed_files

    client = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    return self_signed_files(folder, "intruder", "intruder", (client, False))
