"""Adapters that let the conformance suite look inside what a backend built (a file's bytes and
mode, the labels, the digest a registry serves for a pushed tag): `FakeBackend` reads the fake's
memory; `EngineBackend` serves any backend that loads into the local Docker engine and pushes to
a registry it asks over HTTP.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from flyte_images._registry.wire import ACCEPT
from flyte_images.builders.base import Builder

from .fake import FakeBuilder

BUSYBOX = "flyte-images/busybox:test"  # the base image of flyte-images' own engine tests


def unique(name: str) -> str:
    """A reference no earlier run used (so no cache or leftover image can answer for it)."""
    return f"fi-conformance-{name}:{uuid.uuid4().hex[:12]}"


class Backend(Protocol):
    """What the suite needs to know of a backend under test."""

    @property
    def builder(self) -> Builder: ...

    @property
    def base(self) -> str:
        """A small base image with /bin/sh, `cat` and `stat` (busybox), in the backend's local store."""
        ...

    def tag(self, name: str, pushed: bool = False) -> str:
        """A new reference for a test image; `pushed`: in the adapter's registry."""
        ...

    def read_file(self, reference: str, path: str) -> bytes: ...

    def file_mode(self, reference: str, path: str) -> int: ...

    def labels(self, reference: str) -> dict[str, str]: ...

    def pushed_digest(self, reference: str) -> str | None:
        """The digest the registry serves for the pushed tag `reference`, None when it has none."""
        ...

    def cleanup(self) -> None:
        """Remove what the tests made (called once the test is done)."""
        ...


@dataclass
class FakeBackend:
    """The in-memory fake: everything is read from its store."""

    base: str = BUSYBOX
    registry: str = "registry.fake.test:5000"
    builder: FakeBuilder = field(init=False)

    def __post_init__(self) -> None:
        self.builder = FakeBuilder(bases={self.base})

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
class EngineBackend:
    """A backend that loads into the local Docker engine: images are looked at with docker, pushes
    at the registry over its HTTP API. `registry` is host:port, or a function that gives it when
    a test first pushes (a registry started only for the tests that need one)."""

    builder: Builder
    registry: str | Callable[[], str]
    base: str = BUSYBOX
    scheme: str = "http"  # how the registry is asked: "https" for one with a certificate the system trusts
    made: list[str] = field(default_factory=list)

    def _run(self, *args: str) -> bytes:
        done = subprocess.run(["docker", *args], capture_output=True, check=False, timeout=300)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    def tag(self, name: str, pushed: bool = False) -> str:
        registry = self.registry if isinstance(self.registry, str) else self.registry()
        reference = f"{registry}/{unique(name)}" if pushed else unique(name)
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
        host, _, rest = reference.partition("/")
        repository, _, tag = rest.rpartition(":")
        url = f"{self.scheme}://{host}/v2/{repository}/manifests/{tag}"
        answer = httpx.head(url, headers={"Accept": ACCEPT})
        return answer.headers.get("Docker-Content-Digest") if answer.status_code == 200 else None

    def cleanup(self) -> None:
        for reference in self.made:
            subprocess.run(["docker", "image", "rm", "-f", reference], capture_output=True, check=False)
