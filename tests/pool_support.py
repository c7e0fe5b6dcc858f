"""Three buildkitd daemons of their own for the pool tests (`three_daemons`): each with its own
root and unix socket, from the binary and configuration fixtures/engine/buildkit.sh made; two
declared linux/amd64 (the second reached over TCP with mutual TLS, with the shared daemon's
certificates) and one linux/arm64. The shared daemon is never touched.

What a daemon built is read from its own build history (`buildctl debug histories`): each
record keeps the build's labels and platform, so the image's identifier label says which image
it was, and its platform which half of a multi-platform one. `fresh_daemon` starts a fourth,
with an empty root, for the registry cache tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from backend_support import BuildkitDaemon, stop_process
from engine_support import free_port

from flyte_images._config import BuildkitSettings
from flyte_images.builders.base import IDENTITY_LABEL
from flyte_images.builders.buildkit import builder_name


@dataclass
class PoolDaemon:
    """One buildkitd of the pool: its own root and socket, and optionally a TCP+mTLS listener."""

    shared: BuildkitDaemon
    home: Path
    platform: str
    tcp_port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def unix_addr(self) -> str:
        return f"unix://{self.home}/buildkitd.sock"

    @property
    def address(self) -> str:
        """The address the pool reaches it at."""
        return f"tcp://127.0.0.1:{self.tcp_port}" if self.tcp_port else self.unix_addr

    @property
    def settings(self) -> BuildkitSettings:
        if not self.tcp_port:
            return BuildkitSettings(self.address)
        return BuildkitSettings(
            self.address, self.shared.ca, self.shared.cert, self.shared.key, self.shared.server_name
        )

    def start(self) -> None:
        Path(self.unix_addr.removeprefix("unix://")).unlink(missing_ok=True)
        command = [self.shared.buildkitd, "--config", self.shared.config, "--root", str(self.home / "root")]
        command += ["--addr", self.unix_addr, "--oci-worker-net=host", "--containerd-worker=false"]
        if self.tcp_port:
            command += ["--addr", f"tcp://127.0.0.1:{self.tcp_port}"]
            command += ["--tlscacert", self.shared.ca, "--tlscert", self._server("server.pem")]
            command += ["--tlskey", self._server("server-key.pem")]
        with (self.home / "buildkitd.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._buildctl("debug", "workers").returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"buildkitd in {self.home} did not start: {self.log()[-2000:]}")

    def _server(self, name: str) -> str:
        return str(Path(self.shared.ca).parent / name)

    def _buildctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [self.shared.buildctl, "--addr", self.unix_addr, *args]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)

    def log(self) -> str:
        return (self.home / "buildkitd.log").read_text(errors="replace")

    def kill(self) -> None:
        """The machine goes away: the daemon and every process it started, at once."""
        assert self.process is not None
        family = [self.process.pid, *descendants(self.process.pid)]
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        self.process = None
        unmount_below(self.home)  # the killed steps' root filesystems stay mounted

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def built(self) -> list[str]:
        """The identifier label of every build in the daemon's own history, oldest first."""
        return [identifier for identifier, _ in self.builds()]

    def builds(self) -> list[tuple[str, str]]:
        """(identifier label, platform asked) of every build in the daemon's history, oldest first."""
        shown = self._buildctl("debug", "histories", "--format", "{{json .}}")
        assert shown.returncode == 0, shown.stderr
        records = [json.loads(line)["record"] for line in shown.stdout.splitlines() if line.strip()]
        records.sort(key=lambda record: record.get("CreatedAt", ""))
        attrs = [r.get("FrontendAttrs", {}) for r in records]
        return [(a.get(f"label:{IDENTITY_LABEL}", ""), a.get("platform", "")) for a in attrs]

    def running(self, text: str) -> bool:
        """Whether a process this daemon started (a build step) has `text` in its command line."""
        assert self.process is not None
        for pid in descendants(self.process.pid):
            with contextlib.suppress(OSError):
                if text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
        return False


def unmount_below(folder: Path) -> None:
    """Unmount what is mounted below `folder`, deepest first (a killed daemon leaves its running
    steps' overlay mounts behind)."""
    prefix = f"{folder}/"
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", point], capture_output=True, check=False)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The name in parentheses may hold spaces: the fields after its last ")" are fixed.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


@dataclass
class ThreeDaemons:
    daemons: list[PoolDaemon]

    @property
    def nodes_setting(self) -> str:
        """FLYTE_IMAGES_BUILDKIT_NODES for the three."""
        return ",".join(f"{d.address}={d.platform}" for d in self.daemons)

    def use(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point the buildkit backend at the pool (the TLS files apply to the TCP node only)."""
        tls = self.daemons[1].settings
        monkeypatch.setenv("FLYTE_IMAGES_BUILDER", "buildkit")
        monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_NODES", self.nodes_setting)
        monkeypatch.delenv("FLYTE_IMAGES_BUILDKIT_ADDR", raising=False)
        for name in ("ca", "cert", "key", "server_name"):
            monkeypatch.setenv(f"FLYTE_IMAGES_BUILDKIT_{name.upper()}", str(getattr(tls, name)))

    def holding(self, identifier: str) -> list[PoolDaemon]:
        """The daemons whose history has a build of the image with this identifier."""
        return [d for d in self.daemons if identifier in d.built()]


def forget(daemon: PoolDaemon) -> None:
    """Remove the buildx builder the backend made for `daemon`."""
    name = builder_name(daemon.settings)
    subprocess.run(["docker", "buildx", "rm", name], capture_output=True, check=False)


@contextlib.contextmanager
def fresh_daemon(shared: BuildkitDaemon, home: Path, platform: str) -> Iterator[PoolDaemon]:
    """One more daemon, with an empty root (a new CI runner), declared for `platform` ("+"-joined
    for several); stopped, its builder forgotten and its root removed after."""
    daemon = PoolDaemon(shared, home, platform)
    home.mkdir(parents=True)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        forget(daemon)
        unmount_below(home)
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def three_daemons(shared: BuildkitDaemon, home: Path) -> Iterator[ThreeDaemons]:
    """Start the three daemons in `home`; stop them and forget their buildx builders after."""
    daemons = [
        PoolDaemon(shared, home / "amd64-a", "linux/amd64"),
        PoolDaemon(shared, home / "amd64-b", "linux/amd64", tcp_port=free_port()),
        PoolDaemon(shared, home / "arm64", "linux/arm64"),
    ]
    try:
        for daemon in daemons:
            daemon.home.mkdir(parents=True)
            daemon.start()
        yield ThreeDaemons(daemons)
    finally:
        for daemon in daemons:
            daemon.stop()
            forget(daemon)
        unmount_below(home)
        shutil.rmtree(home, ignore_errors=True)
