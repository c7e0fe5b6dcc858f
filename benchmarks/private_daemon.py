"""A buildkitd of one benchmark alone (own socket, state and configuration), from the binary and
configuration fixtures/engine/buildkit.sh installed, so it can be wiped between steps."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

BUILDKIT_ENV = Path("/var/lib/flyte-images-engine/buildkit/env")


class Daemon:
    """`one_step`: at most one build step at a time (`max-parallelism = 1`), so builds queue."""

    def __init__(self, home: Path, one_step: bool = False) -> None:
        values = dict(line.split("=", 1) for line in BUILDKIT_ENV.read_text().splitlines() if "=" in line)
        self.buildkitd, self.buildctl = values["BUILDKITD"], values["BUILDCTL"]
        self.home, self.root = home, home / "root"
        self.addr = f"unix://{home}/buildkitd.sock"
        self.config = Path(values["BUILDKITD_CONFIG"])
        home.mkdir(parents=True, exist_ok=True)
        if one_step:
            shared = self.config.read_text()
            self.config = home / "buildkitd.toml"
            self.config.write_text(f"{shared.rstrip()}\n\n[worker.oci]\n  max-parallelism = 1\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [self.buildkitd, "--config", str(self.config), "--root", str(self.root), "--addr", self.addr]
        command += ["--oci-worker-net=host", "--containerd-worker=false"]
        with (self.home / "buildkitd.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            probe = [self.buildctl, "--addr", self.addr, "debug", "workers"]
            if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise SystemExit(f"buildkitd did not start: see {self.home / 'buildkitd.log'}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None

    def wipe(self) -> None:
        """An empty daemon: nothing pulled, built or compressed before (a running step's mounts
        below its root are undone first)."""
        self.stop()
        subprocess.run(["umount", "-R", str(self.root)], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        self.start()
