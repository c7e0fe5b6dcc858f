"""The conformance suite every build backend passes, for pytest (the one module that imports it).

A backend's test module subclasses `BackendConformance` (under a name pytest collects) and gives
it a `backend` fixture yielding an adapter (`adapters.Backend`), e.g.
`EngineBackend(MyBuilder(), registry="localhost:5000", base="busybox:1.36")`, cleaned up after.
Each case stages a hand-written Dockerfile and context, builds it and looks at the result through
the adapter. A backend that declares `loads = False` pushes instead where the outcome shows
either way; the cases about loaded images are skipped for it, saying so.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from flyte_images._errors import BaseImageNotFoundError, BuildError, StepFailedError
from flyte_images.builders.base import (
    CAPABILITIES,
    IDENTITY_LABEL,
    BuildRequest,
    ProgressEvent,
    SecretSource,
    is_backend,
)

from .adapters import Backend, EngineBackend, FakeBackend, unique

__all__ = ["Backend", "BackendConformance", "EngineBackend", "FakeBackend", "Recorder"]

# A private key's shape, new each run: no redaction can pass by knowing it.
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC{uuid.uuid4().hex}\n"
    f"q9Jx2mZkN0pL7tR3vW8yB1cD4eF6gH{uuid.uuid4().hex}\n"
    "-----END PRIVATE KEY-----\n"
)
FILES = {
    "app/data.bin": (bytes(range(256)) + b"\xff\xfe not utf-8 \n", 0o640),
    "app/bin/tool.sh": (b"#!/bin/sh\necho tool\n", 0o755),
    "single.txt": (b"one file\n", 0o600),
}


class Recorder:
    """A progress sink that keeps every event."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def text(self) -> str:
        return "\n".join(f"{e.kind} {e.step} {e.text} {e.line}" for e in self.events)


def stage(root: Path, dockerfile: str, files: dict[str, tuple[bytes, int]] | None = None) -> tuple[Path, Path]:
    """A context folder with `files` (relative path -> bytes, mode) and a Dockerfile beside it
    (outside the context)."""
    context = root / "context"
    context.mkdir(parents=True, exist_ok=True)
    for rel, (data, mode) in (files or {}).items():
        path = context / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    (root / "Dockerfile").write_text(dockerfile)
    return context, root / "Dockerfile"


def request_for(backend: Backend, context: Path, dockerfile: Path, name: str, **fields: Any) -> BuildRequest:
    """A build of one new tag (`fields`: more of BuildRequest's): loaded, or pushed by a backend that cannot load."""
    push = not backend.builder.loads
    return BuildRequest(context, dockerfile, (backend.tag(name, pushed=push),), (), push, **fields)


def needs_loading(backend: Backend) -> None:
    if not backend.builder.loads:
        pytest.skip(f"the {backend.builder.name} backend declares loads=False: it has no local store to look in")


class BackendConformance:
    """The suite: every test below runs on the adapter the subclass's `backend` fixture yields."""

    def test_declares_what_it_can_do(self, backend: Backend) -> None:
        assert is_backend(backend.builder)
        for name in CAPABILITIES:
            assert isinstance(getattr(backend.builder, name), bool), name

    @pytest.mark.parametrize("dockerfile_inside", [False, True], ids=["dockerfile-outside", "dockerfile-inside"])
    def test_build_and_load(self, backend: Backend, tmp_path: Path, dockerfile_inside: bool) -> None:
        needs_loading(backend)
        context, dockerfile = stage(
            tmp_path,
            f"FROM {backend.base}\n"
            'LABEL from.dockerfile="yes"\n'
            "WORKDIR /srv\n"
            'COPY ["app", "/opt/app/"]\n'
            'COPY ["single.txt", "./"]\n',
            FILES,
        )
        if dockerfile_inside:
            dockerfile = dockerfile.rename(context / "Dockerfile")
        request = request_for(backend, context, dockerfile, "load", labels={IDENTITY_LABEL: "abc123"})
        reference = request.tags[0]
        progress = Recorder()
        result = backend.builder.build(request, progress)

        assert result.reference == reference
        assert backend.builder.local_exists(reference) is True
        assert backend.labels(reference)[IDENTITY_LABEL] == "abc123"
        assert backend.labels(reference)["from.dockerfile"] == "yes"
        # What the backend received is what the context held at build time, even if it changes later.
        (context / "app/data.bin").write_bytes(b"changed after the build")
        for rel, image_path in [
            ("app/data.bin", "/opt/app/data.bin"),
            ("app/bin/tool.sh", "/opt/app/bin/tool.sh"),
            ("single.txt", "/srv/single.txt"),
        ]:
            data, mode = FILES[rel]
            assert backend.read_file(reference, image_path) == data
            assert backend.file_mode(reference, image_path) == mode
        steps = [e for e in progress.events if e.kind == "step"]
        assert steps and any("COPY" in e.step for e in steps)

    def test_push_reaches_the_registry(self, backend: Backend, tmp_path: Path) -> None:
        context, dockerfile = stage(tmp_path, f'FROM {backend.base}\nCOPY ["single.txt", "/"]\n', FILES)
        reference = backend.tag("push", pushed=True)
        request = BuildRequest(context=context, dockerfile=dockerfile, tags=(reference,), platforms=(), push=True)

        result = backend.builder.build(request, Recorder())

        assert result.reference == reference
        assert result.digest and result.digest.startswith("sha256:")
        assert backend.pushed_digest(reference) == result.digest

    def test_failing_step_says_which_with_exit_code_and_tail(self, backend: Backend, tmp_path: Path) -> None:
        context, dockerfile = stage(
            tmp_path,
            f"FROM {backend.base}\n"
            'RUN ["/bin/sh", "-c", "echo first line\\necho about to fail\\nexit 3"]\n'
            'RUN ["/bin/sh", "-c", "echo never"]\n',
        )
        progress = Recorder()
        with pytest.raises(StepFailedError) as failed:
            backend.builder.build(request_for(backend, context, dockerfile, "fail"), progress)

        error = failed.value
        assert error.exit_code == 3
        assert "RUN" in error.step and "about to fail" in error.step
        assert error.tail.splitlines()[-2:] == ["first line", "about to fail"]
        assert "exit code 3" in str(error) and "about to fail" in str(error)
        assert not any("never" in e.text for e in progress.events if e.kind == "log")

    def test_secret_values_never_reach_progress_or_errors(
        self, backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        token = f"tok-{uuid.uuid4().hex}"
        monkeypatch.setenv("FI_CONFORMANCE_TOKEN", token)
        key_file = tmp_path / "key.pem"
        key_file.write_text(PEM)
        script = (
            f"echo run {uuid.uuid4().hex}\\n"  # a new step each time: no cached result hides the output
            'TOKEN=\\"$(cat /run/secrets/token)\\" && export TOKEN || exit 1\\n'
            'echo \\"token is $TOKEN\\"\\n'
            "cat /run/secrets/token\\n"
            "cat /run/secrets/key\\n"
            "exit 3"
        )
        context, dockerfile = stage(
            tmp_path,
            f"FROM {backend.base}\n"
            "RUN --mount=type=secret,id=token \\\n"
            "    --mount=type=secret,id=key \\\n"
            f'    ["/bin/sh", "-c", "{script}"]\n',
        )
        request = request_for(
            backend,
            context,
            dockerfile,
            "secret",
            secrets=(SecretSource("token", env="FI_CONFORMANCE_TOKEN"), SecretSource("key", file=key_file)),
            redact=(token, PEM),
        )
        progress = Recorder()
        with pytest.raises(StepFailedError) as failed:
            backend.builder.build(request, progress)

        error = failed.value
        seen = progress.text()
        assert "token is ***" in seen  # the step did print it, and it was hidden
        for secret in [token, *(line for line in PEM.splitlines() if len(line) >= 3)]:
            assert secret not in seen
            assert secret not in str(error) and secret not in error.tail and secret not in error.step
        assert error.exit_code == 3

    def test_no_cache_runs_a_step_again(self, backend: Backend, tmp_path: Path) -> None:
        # The step prints "ran <marker>", a line its own text (`ran \"<marker>\"`) does not hold.
        marker = uuid.uuid4().hex
        context, dockerfile = stage(
            tmp_path, f'FROM {backend.base}\nRUN ["/bin/sh", "-c", "echo ran \\"{marker}\\""]\n'
        )
        printed = []
        for no_cache in (False, True):  # the first build fills the cache the second must not use
            progress = Recorder()
            backend.builder.build(request_for(backend, context, dockerfile, "nocache", no_cache=no_cache), progress)
            printed.append([e for e in progress.events if e.kind == "log" and f"ran {marker}" in e.text])
        assert printed[0] and printed[1], "a build with no_cache=True reused the step's cached result"

    def test_missing_base_image(self, backend: Backend, tmp_path: Path) -> None:
        context, dockerfile = stage(tmp_path, "FROM flyte-images/missing-base:nope\nRUN true\n")
        with pytest.raises(BaseImageNotFoundError, match="missing-base"):
            backend.builder.build(request_for(backend, context, dockerfile, "nobase"), Recorder())

    def test_nothing_outside_the_context_is_sent(self, backend: Backend, tmp_path: Path) -> None:
        (tmp_path / "outside.txt").write_text("not in the context\n")
        context, dockerfile = stage(tmp_path, f'FROM {backend.base}\nCOPY ["../outside.txt", "/"]\n', FILES)
        with pytest.raises(BuildError):
            backend.builder.build(request_for(backend, context, dockerfile, "outside"), Recorder())

    def test_loading_several_platforms_loads_the_hosts_and_says_which_not(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        needs_loading(backend)
        context, dockerfile = stage(tmp_path, f"FROM {backend.base}\n")
        tag = backend.tag("multi")
        platforms = ("linux/amd64", "linux/arm64")
        request = BuildRequest(context=context, dockerfile=dockerfile, tags=(tag,), platforms=platforms, push=False)
        recorder = Recorder()
        with pytest.warns(UserWarning, match="loading linux/amd64 only; not loaded: linux/arm64"):
            backend.builder.build(request, recorder)
        assert backend.builder.local_exists(tag) is True
        assert any("not loaded: linux/arm64" in event.text for event in recorder.events)

    def test_local_exists(self, backend: Backend) -> None:
        needs_loading(backend)
        assert backend.builder.local_exists(unique("never-built")) is False
        assert backend.builder.local_exists(backend.base) is True  # a base image the engine has
