"""no_cache: BuildKit re-runs every step of a build, while the identifier (and so the image's
tag and the skip rule) stays what it was."""

from __future__ import annotations

from pathlib import Path

import pytest

import flyte_images
from flyte_images import Image, TaskEnvironment
from flyte_images.builders._buildx import buildx_command
from flyte_images.builders.base import BuildRequest
from flyte_images.testing import FakeBuilder

BUSYBOX = "flyte-images/busybox:test"


def _image(tmp_path: Path) -> Image:
    (tmp_path / "a.py").write_text("a")
    return Image.from_base(BUSYBOX).clone(name="fi-nocache").with_source_file(tmp_path / "a.py")


@pytest.mark.parametrize("no_cache", [False, True])
def test_the_buildx_command_asks_for_no_cache_only_when_told(tmp_path: Path, no_cache: bool) -> None:
    request = BuildRequest(tmp_path, tmp_path / "Dockerfile", ("app:1",), (), push=False, no_cache=no_cache)
    assert ("--no-cache" in buildx_command(request, tmp_path / "meta.json")) is no_cache


def test_build_passes_no_cache_to_the_backend_and_keeps_the_identifier(tmp_path: Path) -> None:
    fake = FakeBuilder()
    plain = flyte_images.build(_image(tmp_path), builder=fake, quiet=True)
    fresh = flyte_images.build(_image(tmp_path), builder=fake, quiet=True, force=True, no_cache=True)
    assert [request.no_cache for request in fake.requests] == [False, True]
    assert fresh == plain and fake.requests[1].tags == fake.requests[0].tags


def test_no_cache_alone_does_not_rebuild_an_image_that_exists(tmp_path: Path) -> None:
    fake = FakeBuilder()
    flyte_images.build(_image(tmp_path), builder=fake, quiet=True)
    again = flyte_images.build(_image(tmp_path), builder=fake, quiet=True, no_cache=True)
    assert not again.built and len(fake.requests) == 1


def test_build_images_passes_no_cache_to_every_build(tmp_path: Path) -> None:
    fake = FakeBuilder()
    env = TaskEnvironment("nocache", image=_image(tmp_path))
    flyte_images.build_images(env, builder=fake, quiet=True, no_cache=True)  # type: ignore[arg-type]
    assert [request.no_cache for request in fake.requests] == [True]


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_forced_build_with_no_cache_runs_its_steps_again() -> None:
    from engine_support import BASE_IMAGE, remove_image, run_in

    image = Image.from_base(BASE_IMAGE).clone(name="fi-test-nocache").with_commands(["date +%s%N > /stamp"])
    stamps = []
    try:
        for no_cache in (False, False, True):  # built, then forced (the engine's cache answers), then no_cache
            result = flyte_images.build(image, force=True, quiet=True, no_cache=no_cache)
            assert result.built and result.uri == image.uri
            stamps.append(run_in(result.uri, "cat /stamp").strip())
    finally:
        remove_image(image.uri)
    assert stamps[0] == stamps[1] != stamps[2]
