"""The Flyte SDK's docker builder settings read from the environment, as flyte 2.12 reads them:
FLYTE_DOCKER_BUILDER_CACHE_FROM / _TO (a BuildKit cache, both needed) and
FLYTE_DOCKER_BUILD_EXTRA_ARGS (more `docker buildx build` flags)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

import flyte_images
from flyte_images import ConfigError, Image
from flyte_images.builders.docker import extra_args
from flyte_images.testing import FakeBuilder

FROM_ENV, TO_ENV, EXTRA_ENV = (
    "FLYTE_DOCKER_BUILDER_CACHE_FROM",
    "FLYTE_DOCKER_BUILDER_CACHE_TO",
    "FLYTE_DOCKER_BUILD_EXTRA_ARGS",
)


def _image(tmp_path: Path) -> Image:
    (tmp_path / "a.py").write_text(f"A = {uuid.uuid4().hex!r}\n")
    return Image.from_base("flyte-images/busybox:test").clone(name="fi-flyte-env").with_source_file(tmp_path / "a.py")


def _request_caches(tmp_path: Path, **kw: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fake = FakeBuilder()
    flyte_images.build(_image(tmp_path), builder=fake, quiet=True, require_check=False, **kw)  # type: ignore[arg-type]
    (request,) = fake.requests
    return request.cache_from, request.cache_to


def test_the_builder_cache_comes_from_both_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FROM_ENV, "type=registry,ref=reg.example/app:cache")
    assert _request_caches(tmp_path) == ((), ())  # one of the two: ignored, as flyte does
    monkeypatch.setenv(TO_ENV, "type=registry,ref=reg.example/app:cache,mode=max")
    assert _request_caches(tmp_path) == (
        ("type=registry,ref=reg.example/app:cache",),
        ("type=registry,ref=reg.example/app:cache,mode=max",),
    )
    mine = ("type=local,src=/tmp/c",), ("type=local,dest=/tmp/c",)
    assert _request_caches(tmp_path, cache_from=mine[0], cache_to=mine[1]) == mine  # the caller's win
    monkeypatch.setenv(TO_ENV, "type=registry,ref=x\nRUN evil")
    with pytest.raises(ConfigError, match=f"{TO_ENV} holds a line break"):
        _request_caches(tmp_path)


def test_extra_build_flags_are_shell_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXTRA_ENV, "--network host --add-host 'mirror:10.0.0.5' --build-arg=HTTP_PROXY=http://p:3128")
    assert extra_args() == [
        "--network",
        "host",
        "--add-host",
        "mirror:10.0.0.5",
        "--build-arg=HTTP_PROXY=http://p:3128",
    ]
    monkeypatch.delenv(EXTRA_ENV)
    assert extra_args() == []


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("--tag other:1", "--tag"),
        ("--network host -t other:1", "-t"),
        ("-tother:1", "-t"),
        ("--output=type=local,dest=/tmp/x", "--output"),
        ("--push", "--push"),
        ("-q", "-q"),
        ("--platform linux/arm64", "--platform"),
        ("--progress=tty", "--progress"),
    ],
)
def test_flags_the_backend_sets_itself_are_refused(monkeypatch: pytest.MonkeyPatch, value: str, named: str) -> None:
    monkeypatch.setenv(EXTRA_ENV, f"--secret id=tok,env=TOKEN_sekr3t {value}")
    with pytest.raises(ConfigError) as found:
        extra_args()
    assert f"sets {named}," in str(found.value) and "sekr3t" not in str(found.value)


def test_unbalanced_quotes_are_refused_without_echoing_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXTRA_ENV, "--build-arg 'TOKEN=sekr3t")
    with pytest.raises(ConfigError, match="cannot be split into words") as found:
        extra_args()
    assert "sekr3t" not in str(found.value)


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_extra_flags_reach_the_engine_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine_support import docker, remove_image

    monkeypatch.setenv(EXTRA_ENV, "--label fi.test.extra=from-flyte-env --network none")
    built = flyte_images.build(_image(tmp_path), force=True, quiet=True)
    try:
        labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}", built.uri).stdout)
        assert labels["fi.test.extra"] == "from-flyte-env"
        assert labels["dev.flyte-images.identifier"] == built.uri.rsplit(":", 1)[1]
    finally:
        remove_image(built.uri)
    monkeypatch.setenv(EXTRA_ENV, "--load")
    with pytest.raises(ConfigError, match="sets --load"):
        flyte_images.build(_image(tmp_path), force=True, quiet=True)
