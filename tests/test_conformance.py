"""The conformance suite (flyte_images.testing.conformance) on every built-in backend, and how
backends are found.

The fake runs everywhere; the Docker backend runs on the real engine, the buildkit backend on
the real buildkitd of fixtures/engine/buildkit.sh over TCP with mutual TLS (both marked `engine`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_support import require_buildkit

from flyte_images._build import backends as _builders
from flyte_images._errors import ConfigError
from flyte_images.builders import _multiarch
from flyte_images.builders._buildx import buildx_command
from flyte_images.builders.base import CAPABILITIES, BuildRequest, is_backend
from flyte_images.builders.buildkit import BuildkitBuilder
from flyte_images.builders.docker import DockerBuilder
from flyte_images.testing import FakeBuilder
from flyte_images.testing.conformance import Backend, BackendConformance, EngineBackend, FakeBackend


@pytest.fixture(
    params=[
        "fake",
        pytest.param("docker", marks=pytest.mark.engine),
        pytest.param("buildkit", marks=pytest.mark.engine),
    ]
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    adapter: Backend

    def registry() -> str:  # started when a test first pushes
        return str(request.getfixturevalue("local_registry"))

    if request.param == "docker":
        request.getfixturevalue("engine")
        adapter = EngineBackend(DockerBuilder(), registry)
    elif request.param == "buildkit":
        request.getfixturevalue("engine")
        adapter = EngineBackend(BuildkitBuilder(require_buildkit().settings(tcp=True)), registry)
    else:
        adapter = FakeBackend()
    yield adapter
    adapter.cleanup()


class TestBackends(BackendConformance):
    """The whole suite, on the fake, the docker backend and the buildkit backend."""


# ----- finding a backend -----------------------------------------------------------------------


def test_built_in_backends_are_found_without_reading_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
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
    info = tmp_path / "fi_third_party-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fi-third-party\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[flyte_images.builders]\n"
        "in-memory = flyte_images.testing:FakeBuilder\n"
        "docker = flyte_images.testing:FakeBuilder\n"
        "not-one = builtins:object\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    assert isinstance(_builders.get_builder("in-memory"), FakeBuilder)
    assert isinstance(_builders.get_builder("docker"), DockerBuilder)
    assert _builders.available_builders()["in-memory"] == "flyte_images.testing:FakeBuilder"
    assert _builders.available_builders()["docker"] == "built in"
    with pytest.raises(ConfigError, match=r"no image builder named 'podman'; available: .*in-memory"):
        _builders.get_builder("podman")
    with pytest.raises(ConfigError, match=r"'not-one' \(builtins:object\) does not declare name, exports_cache"):
        _builders.get_builder("not-one")


def test_a_backend_declares_what_it_can_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Capabilities are declared, never assumed: an object that lacks one is refused, naming it,
    and declaring them runs no engine probe (the docker backend asks its engine when read)."""

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
    with pytest.raises(ConfigError, match=r"no image builder named 'podman'; available: buildkit, docker, local"):
        _builders.get_builder("podman")
    with pytest.raises(ConfigError, match="not an image builder"):
        _builders.get_builder(42)  # type: ignore[arg-type]


def test_the_docker_backend_names_a_platform_only_when_it_is_not_the_engines(tmp_path: Path) -> None:
    def command(platforms: tuple[str, ...], native: str | None) -> list[str]:
        request = BuildRequest(tmp_path, tmp_path / "Dockerfile", ("app:1",), platforms, push=False)
        return buildx_command(request, tmp_path / "meta.json", native)

    assert "--platform" not in command(("linux/amd64",), "linux/amd64")  # the engine's own: built by default
    for platforms, native in ((("linux/arm64",), "linux/amd64"), (("linux/amd64",), None)):
        built = command(platforms, native)
        assert built[built.index("--platform") + 1] == platforms[0]
    both = command(("linux/amd64", "linux/arm64"), "linux/amd64")
    assert both[both.index("--platform") + 1] == "linux/amd64,linux/arm64"
