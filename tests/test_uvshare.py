"""The uv binary a build needs is fetched only for a build, and shared by every staging folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import write_tree

import flyte_images
from flyte_images import Image
from flyte_images._files import uvbin
from flyte_images._files.statcache import cache_dir
from flyte_images.testing import FakeBuilder


def _uv_image(project: Path, name: str) -> Image:
    return Image.from_debian_base(python_version=(3, 12), install_flyte=False, name=name).with_pip_packages("six")


def test_staging_folders_share_one_uv_binary_and_an_existing_image_fetches_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = cache_dir() / "uv" / uvbin.UV_VERSION / "amd64" / "uv"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"\x7fELF stand-in for the uv binary")  # the real one is a 40 MB download
    cached.chmod(0o755)
    fetched: list[str] = []
    real = uvbin.uv_binary
    monkeypatch.setattr(uvbin, "uv_binary", lambda platform, *a: fetched.append(platform) or real(platform, *a))
    write_tree(tmp_path, {"x": (b"x", 0o644)})
    fake = FakeBuilder()
    one, two = _uv_image(tmp_path, "one"), _uv_image(tmp_path, "two").with_env_vars({"B": "2"})
    assert flyte_images.build(one, builder=fake, quiet=True).built
    assert flyte_images.build(two, builder=fake, quiet=True).built
    staged = sorted((cache_dir() / "staging").glob("*/context/_fi/uv/amd64/uv"))
    assert len(staged) == 2
    inodes = {(os.stat(p).st_ino, os.stat(p).st_dev) for p in staged}
    assert inodes == {(os.stat(cached).st_ino, os.stat(cached).st_dev)}  # one file, linked
    assert fake.requests[0].context.joinpath("_fi/uv/amd64/uv").read_bytes() == cached.read_bytes()
    fetched.clear()
    assert not flyte_images.build(one, builder=fake, quiet=True).built
    assert fetched == []  # an image that exists needs no uv
