"""Adapters that let one conformance suite look inside what each backend built.

Each adapter wraps a backend and answers, in that backend's own terms: what bytes and mode a
file has in a built image, what labels it has, and what a registry received from a push.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

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
    builder: DockerBuilder = field(default_factory=DockerBuilder)
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


Backend = FakeBackend | DockerBackend
