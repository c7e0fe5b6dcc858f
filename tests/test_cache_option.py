"""cache="registry": BuildKit's layer cache kept in the image's repository, one tag per platform
(fake backends here; the buildkit engine tests prove a wiped daemon reuses it, and that each
platform of a pool build writes its own)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import flyte_images
from flyte_images import ConfigError, Image
from flyte_images.builders.base import BuildRequest, cache_tag, for_platform, per_platform_cache
from flyte_images.testing import FakeBuilder


class ExportingFake(FakeBuilder):
    """The fake backend, claiming it can export a cache (as the buildkit backend can)."""

    exports_cache = True


def _image(tmp_path: Path, registry: str | None = "registry.example") -> Image:
    (tmp_path / "a.py").write_text("a")
    image = Image.from_base("flyte-images/busybox:test").clone(name="cached", registry=registry)
    return image.with_source_file(tmp_path / "a.py")


def test_registry_cache_is_imported_and_exported_where_the_backend_can(tmp_path: Path) -> None:
    fake = ExportingFake()
    flyte_images.build(_image(tmp_path), builder=fake, cache="registry", quiet=True, require_check=False)
    (request,) = fake.requests
    # The platform's own tag, also for one platform on one daemon.
    assert request.cache_from == ("type=registry,ref=registry.example/cached:buildcache-linux-amd64",)
    assert request.cache_to == (
        "type=registry,ref=registry.example/cached:buildcache-linux-amd64,mode=max,image-manifest=true,"
        "oci-mediatypes=true,ignore-error=true",
    )


def test_each_platform_has_its_own_cache_tag(tmp_path: Path) -> None:
    fake = ExportingFake()
    image = _image(tmp_path).clone(platform=("linux/amd64", "linux/arm64"))
    flyte_images.build(image, builder=fake, cache="registry", quiet=True, require_check=False)
    (request,) = fake.requests
    refs = [spec.split(",")[1] for spec in request.cache_to]
    assert refs == [
        "ref=registry.example/cached:buildcache-linux-amd64",
        "ref=registry.example/cached:buildcache-linux-arm64",
    ]
    assert [spec.split(",")[1] for spec in request.cache_from] == refs
    assert per_platform_cache(request)

    # A platform's build (its own node's) reads and writes its own tag, and keeps the caller's caches.
    request = dataclasses.replace(request, cache_from=(*request.cache_from, "ghcr.io/acme/shared:cache"))
    arm = for_platform(request, "linux/arm64")
    assert arm.platforms == ("linux/arm64",) and not per_platform_cache(arm)
    assert arm.cache_from == (
        "type=registry,ref=registry.example/cached:buildcache-linux-arm64",
        "ghcr.io/acme/shared:cache",
    )
    assert [spec.split(",")[1] for spec in arm.cache_to] == ["ref=registry.example/cached:buildcache-linux-arm64"]


def test_one_cache_for_several_platforms_is_not_split(tmp_path: Path) -> None:
    given = "type=registry,ref=ghcr.io/acme/app:cache,mode=max"
    request = BuildRequest(tmp_path, tmp_path / "Dockerfile", ("a:1",), ("linux/amd64", "linux/arm64"), True,
                           cache_from=(given,), cache_to=(given,))  # fmt: skip
    assert not per_platform_cache(request)
    assert for_platform(request, "linux/arm64").cache_to == (given,)
    assert cache_tag("linux/arm/v7") == "buildcache-linux-arm-v7"


def test_a_backend_that_cannot_export_is_told_which_tags_it_imports(tmp_path: Path) -> None:
    image = _image(tmp_path).clone(platform=("linux/amd64", "linux/arm64"))
    with pytest.warns(
        UserWarning,
        match="imports registry.example/cached:buildcache-linux-amd64, "
        "registry.example/cached:buildcache-linux-arm64, but",
    ):
        flyte_images.build(image, builder=FakeBuilder(), cache="registry", quiet=True, require_check=False)


def test_a_backend_that_cannot_export_only_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_CACHE", "registry")
    fake = FakeBuilder()
    flyte_images.build(_image(tmp_path), builder=fake, quiet=True, require_check=False)
    (request,) = fake.requests
    assert request.cache_from and request.cache_to == ()


def test_a_registry_cache_needs_a_registry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not pushed: give the image a registry"):
        flyte_images.build(_image(tmp_path, registry=None), builder=FakeBuilder(), cache="registry", quiet=True)


def test_a_bad_cache_setting_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_CACHE", "disk")
    with pytest.raises(ConfigError, match="FLYTE_IMAGES_CACHE"):
        flyte_images.build(_image(tmp_path), builder=FakeBuilder(), quiet=True, require_check=False)


def test_the_config_file_key_cache_is_used(tmp_path: Path) -> None:
    config = tmp_path / "flyte-images.toml"
    config.write_text('cache = "registry"\n')
    flyte_images.init_from_config(config)
    fake = ExportingFake()
    flyte_images.build(_image(tmp_path), builder=fake, quiet=True, require_check=False)
    (request,) = fake.requests
    assert request.cache_from == ("type=registry,ref=registry.example/cached:buildcache-linux-amd64",)
