"""cache="registry": BuildKit's layer cache kept in the image's repository (fake backends here;
the buildkit engine test proves a wiped daemon reuses it)."""

from __future__ import annotations

from pathlib import Path

import pytest

import flyte_images
from flyte_images import ConfigError, Image
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
    assert request.cache_from == ("type=registry,ref=registry.example/cached:buildcache",)
    assert request.cache_to[0].startswith("type=registry,ref=registry.example/cached:buildcache,mode=max")


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
    assert request.cache_from == ("type=registry,ref=registry.example/cached:buildcache",)
