"""One conformance suite for every build backend (builders.base.Builder).

Each case writes a small Dockerfile by hand, stages a context folder, builds it with the
backend and looks at the result through that backend's adapter (tests/backend_support.py).
The fake runs everywhere; the Docker backend runs on the real engine, the buildkit backend on
the real buildkitd of fixtures/engine/buildkit.sh over TCP with mutual TLS (both marked `engine`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_support import BUSYBOX, Backend, BuildkitBackend, DockerBackend, FakeBackend, require_buildkit, unique
from conftest import write_tree

from flyte_images._errors import BaseImageNotFoundError, BuildError, ConfigError, StepFailedError
from flyte_images.builders.base import IDENTITY_LABEL, BuildRequest, ProgressEvent, SecretSource
from flyte_images.builders.buildkit import BuildkitBuilder

PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC{uuid.uuid4().hex}\n"
    f"q9Jx2mZkN0pL7tR3vW8yB1cD4eF6gH{uuid.uuid4().hex}\n"
    "-----END PRIVATE KEY-----\n"
)


@pytest.fixture(
    params=[
        "fake",
        pytest.param("docker", marks=pytest.mark.engine),
        pytest.param("buildkit", marks=pytest.mark.engine),
    ]
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    adapter: Backend
    if request.param == "docker":
        request.getfixturevalue("engine")
        adapter = DockerBackend(registry_host=lambda: request.getfixturevalue("local_registry"))
    elif request.param == "buildkit":
        request.getfixturevalue("engine")
        daemon = require_buildkit()
        adapter = BuildkitBackend(
            registry_host=lambda: request.getfixturevalue("local_registry"),
            builder=BuildkitBuilder(daemon.settings(tcp=True)),
        )
    else:
        adapter = FakeBackend()
    yield adapter
    adapter.cleanup()


class Recorder:
    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def text(self) -> str:
        return "\n".join(f"{e.kind} {e.step} {e.text} {e.line}" for e in self.events)


def stage(root: Path, dockerfile: str, files: dict[str, tuple[bytes, int]] | None = None) -> tuple[Path, Path]:
    """A context folder with `files` and a Dockerfile beside it (outside the context)."""
    context = root / "context"
    write_tree(context, files or {})
    (root / "Dockerfile").write_text(dockerfile)
    return context, root / "Dockerfile"


def request_for(context: Path, dockerfile: Path, *tags: str, **more: object) -> BuildRequest:
    return BuildRequest(context=context, dockerfile=dockerfile, tags=tags, platforms=(), push=False, **more)  # type: ignore[arg-type]


FILES = {
    "app/data.bin": (bytes(range(256)) + b"\xff\xfe not utf-8 \n", 0o640),
    "app/bin/tool.sh": (b"#!/bin/sh\necho tool\n", 0o755),
    "single.txt": (b"one file\n", 0o600),
}


@pytest.mark.parametrize("dockerfile_inside", [False, True], ids=["dockerfile-outside", "dockerfile-inside"])
def test_build_and_load(backend: Backend, tmp_path: Path, dockerfile_inside: bool) -> None:
    context, dockerfile = stage(
        tmp_path,
        f"FROM {BUSYBOX}\n"
        'LABEL from.dockerfile="yes"\n'
        "WORKDIR /srv\n"
        'COPY ["app", "/opt/app/"]\n'
        'COPY ["single.txt", "./"]\n',
        FILES,
    )
    if dockerfile_inside:
        dockerfile = dockerfile.rename(context / "Dockerfile")
    reference = backend.tag("load")
    progress = Recorder()
    result = backend.builder.build(
        request_for(context, dockerfile, reference, labels={IDENTITY_LABEL: "abc123"}), progress
    )

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


def test_push_reaches_the_registry(backend: Backend, tmp_path: Path) -> None:
    context, dockerfile = stage(tmp_path, f'FROM {BUSYBOX}\nCOPY ["single.txt", "/"]\n', FILES)
    reference = backend.tag("push", pushed=True)
    request = BuildRequest(context=context, dockerfile=dockerfile, tags=(reference,), platforms=(), push=True)

    result = backend.builder.build(request, Recorder())

    assert result.reference == reference
    assert result.digest and result.digest.startswith("sha256:")
    assert backend.pushed_digest(reference) == result.digest


def test_failing_step_says_which_with_exit_code_and_tail(backend: Backend, tmp_path: Path) -> None:
    context, dockerfile = stage(
        tmp_path,
        f"FROM {BUSYBOX}\n"
        'RUN ["/bin/sh", "-c", "echo first line\\necho about to fail\\nexit 3"]\n'
        'RUN ["/bin/sh", "-c", "echo never"]\n',
    )
    progress = Recorder()
    with pytest.raises(StepFailedError) as failed:
        backend.builder.build(request_for(context, dockerfile, backend.tag("fail")), progress)

    error = failed.value
    assert error.exit_code == 3
    assert "RUN" in error.step and "about to fail" in error.step
    assert error.tail.splitlines()[-2:] == ["first line", "about to fail"]
    assert "exit code 3" in str(error) and "about to fail" in str(error)
    assert not any("never" in e.text for e in progress.events if e.kind == "log")


def test_secret_values_never_reach_progress_or_errors(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
        f"FROM {BUSYBOX}\n"
        "RUN --mount=type=secret,id=token \\\n"
        "    --mount=type=secret,id=key \\\n"
        f'    ["/bin/sh", "-c", "{script}"]\n',
    )
    request = request_for(
        context,
        dockerfile,
        backend.tag("secret"),
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


def test_missing_base_image(backend: Backend, tmp_path: Path) -> None:
    context, dockerfile = stage(tmp_path, "FROM flyte-images/missing-base:nope\nRUN true\n")
    with pytest.raises(BaseImageNotFoundError, match="missing-base"):
        backend.builder.build(request_for(context, dockerfile, backend.tag("nobase")), Recorder())


def test_nothing_outside_the_context_is_sent(backend: Backend, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("not in the context\n")
    context, dockerfile = stage(tmp_path, f'FROM {BUSYBOX}\nCOPY ["../outside.txt", "/"]\n', FILES)
    with pytest.raises(BuildError):
        backend.builder.build(request_for(context, dockerfile, backend.tag("outside")), Recorder())


def test_loading_several_platforms_loads_the_hosts_and_says_which_not(backend: Backend, tmp_path: Path) -> None:
    context, dockerfile = stage(tmp_path, f"FROM {BUSYBOX}\n")
    tag = backend.tag("multi")
    request = BuildRequest(
        context=context, dockerfile=dockerfile, tags=(tag,), platforms=("linux/amd64", "linux/arm64"), push=False
    )
    recorder = Recorder()
    with pytest.warns(UserWarning, match="loading linux/amd64 only; not loaded: linux/arm64"):
        backend.builder.build(request, recorder)
    assert backend.builder.local_exists(tag) is True
    assert any("not loaded: linux/arm64" in event.text for event in recorder.events)


def test_local_exists(backend: Backend) -> None:
    assert backend.builder.local_exists(unique("never-built")) is False
    assert backend.builder.local_exists(BUSYBOX) is True  # a base image the engine has


# ----- finding a backend -----------------------------------------------------------------------


def test_built_in_backends_are_found_without_reading_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte_images import _builders
    from flyte_images.builders.buildkit import BuildkitBuilder
    from flyte_images.builders.docker import DockerBuilder
    from flyte_images.builders.fake import FakeBuilder

    def no_metadata(group: str) -> list[object]:
        raise AssertionError(f"entry points of {group} read for a built-in backend")

    monkeypatch.setattr(_builders, "entry_points", no_metadata)
    assert isinstance(_builders.get_builder(), DockerBuilder)
    assert isinstance(_builders.get_builder("docker"), DockerBuilder)
    assert isinstance(_builders.get_builder("local"), DockerBuilder)
    assert isinstance(_builders.get_builder("buildkit"), BuildkitBuilder)
    monkeypatch.setenv("FLYTE_IMAGES_BUILDER", "local")
    assert isinstance(_builders.get_builder(), DockerBuilder)
    fake = FakeBuilder()
    assert _builders.get_builder(fake) is fake


def test_other_backends_are_found_through_installed_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package that registers a backend, as pip installs one (a dist-info folder on sys.path);
    an installed package cannot take a built-in name."""
    from flyte_images import _builders
    from flyte_images.builders.docker import DockerBuilder
    from flyte_images.builders.fake import FakeBuilder

    info = tmp_path / "fi_third_party-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fi-third-party\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[flyte_images.builders]\n"
        "in-memory = flyte_images.builders.fake:FakeBuilder\n"
        "docker = flyte_images.builders.fake:FakeBuilder\n"
        "not-one = builtins:object\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    assert isinstance(_builders.get_builder("in-memory"), FakeBuilder)
    assert isinstance(_builders.get_builder("docker"), DockerBuilder)
    assert _builders.available_builders()["in-memory"] == "flyte_images.builders.fake:FakeBuilder"
    assert _builders.available_builders()["docker"] == "built in"
    with pytest.raises(ConfigError, match=r"no image builder named 'podman'; available: .*in-memory"):
        _builders.get_builder("podman")
    with pytest.raises(ConfigError, match=r"'not-one' \(builtins:object\) does not declare name, exports_cache"):
        _builders.get_builder("not-one")


def test_a_backend_declares_what_it_can_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Capabilities are declared, never assumed: an object that lacks one is refused, naming it,
    and declaring them runs no engine probe (the docker backend asks its engine when read)."""
    from flyte_images import _builders
    from flyte_images.builders import _multiarch
    from flyte_images.builders.base import CAPABILITIES, is_backend
    from flyte_images.builders.docker import DockerBuilder

    class Undeclared:
        name = "undeclared"

        def local_exists(self, reference: str) -> bool | None:
            return None

        def build(self, request: BuildRequest, progress: object) -> object:
            raise AssertionError("never built")

    with pytest.raises(ConfigError, match=r"does not declare exports_cache, multi_platform, loads"):
        _builders.get_builder(Undeclared())

    def probed() -> object:
        raise AssertionError("the engine was asked to tell a backend from another object")

    monkeypatch.setattr(_multiarch, "engine_facts", probed)
    docker = DockerBuilder()
    assert is_backend(docker) and _builders.get_builder(docker) is docker
    for backend in (_builders.get_builder("buildkit"), _builders.WholeImageBuilder(object())):
        assert all(isinstance(getattr(backend, name), bool) for name in CAPABILITIES)


def test_an_unknown_backend_names_the_available_ones() -> None:
    from flyte_images import _builders

    with pytest.raises(ConfigError, match=r"no image builder named 'podman'; available: buildkit, docker, local"):
        _builders.get_builder("podman")
    with pytest.raises(ConfigError, match="not an image builder"):
        _builders.get_builder(42)  # type: ignore[arg-type]


def test_the_docker_backend_names_a_platform_only_when_it_is_not_the_engines(tmp_path: Path) -> None:
    from flyte_images.builders.docker import buildx_command

    def command(platforms: tuple[str, ...], native: str | None) -> list[str]:
        request = BuildRequest(tmp_path, tmp_path / "Dockerfile", ("app:1",), platforms, push=False)
        return buildx_command(request, tmp_path / "meta.json", native)

    assert "--platform" not in command(("linux/amd64",), "linux/amd64")  # the engine's own: built by default
    for platforms, native in ((("linux/arm64",), "linux/amd64"), (("linux/amd64",), None)):
        built = command(platforms, native)
        assert built[built.index("--platform") + 1] == platforms[0]
    both = command(("linux/amd64", "linux/arm64"), "linux/amd64")
    assert both[both.index("--platform") + 1] == "linux/amd64,linux/arm64"
