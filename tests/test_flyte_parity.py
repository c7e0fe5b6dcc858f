"""Where flyte 2.12.1 and flyte-images meet the same code: what both accept, where both fail and
with which exception types (the installed `flyte` package is the reference, asked directly)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import flyte
import pytest
from flyte._build import ImageBuild as FlyteImageBuild
from flyte._internal.imagebuild.docker_builder import AptPackagesHandler
from flyte._internal.imagebuild.image_builder import ImageBuildEngine

import flyte_images
from flyte_images import Image, ImageBuild, Secret
from flyte_images.errors import BuildError, ConfigError, ImageBuildError, InvalidBuilderError, InvalidLayerArgument
from flyte_images.testing import FakeBuilder

BASE = Image.from_debian_base(python_version=(3, 12), install_flyte=False, name="app")


# ----- ImageBuild -------------------------------------------------------------------------------


def test_an_image_build_without_a_uri_keeps_none_as_flytes() -> None:
    ours, theirs = ImageBuild(uri=None, remote_run=None), FlyteImageBuild(uri=None, remote_run=None)
    assert ours.uri is None and theirs.uri is None
    assert ours == "" and ours.remote_run is None and ours.build_run is None


# ----- init(image_builder=...) ------------------------------------------------------------------


class SdkStyleBuilder:
    """An image builder as the Flyte SDK's ImageBuilder protocol has it."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    async def build_image(self, image: Any, dry_run: bool, wait: bool = True, force: bool = False) -> FlyteImageBuild:
        self.calls.append({"image": image, "dry_run": dry_run, "wait": wait, "force": force})
        if self.fail is not None:
            raise self.fail
        return FlyteImageBuild(uri=f"built/{image.uri}", remote_run=None)

    def get_checkers(self) -> None:
        return None


def test_an_unknown_builder_name_is_a_value_error_as_in_flyte() -> None:
    with pytest.raises(ValueError, match="does-not-exist"):
        ImageBuildEngine._get_builder("does-not-exist")  # type: ignore[arg-type]
    flyte_images.init(image_builder="does-not-exist")
    with pytest.raises(ValueError, match="no image builder named 'does-not-exist'") as caught:
        flyte_images.build(BASE, push=False)
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, InvalidBuilderError)


def test_init_with_an_sdk_image_builder_object_builds_with_it() -> None:
    builder = SdkStyleBuilder()
    assert ImageBuildEngine._get_builder(builder) is builder  # type: ignore[arg-type]  # flyte uses it as is
    flyte_images.init(image_builder=builder)
    result = flyte_images.build(BASE, push=False)
    (call,) = builder.calls
    assert call["image"] is BASE and call == {"image": BASE, "dry_run": False, "wait": True, "force": False}
    assert result == f"built/{BASE.uri}" and result.uri == f"built/{BASE.uri}" and result.built
    assert result.path == "builder" and "SdkStyleBuilder" in result.reason

    dry = flyte_images.build(BASE, push=False, dry_run=True, force=True)
    assert builder.calls[-1]["dry_run"] is True and builder.calls[-1]["force"] is True and not dry.built


def test_options_an_sdk_image_builder_cannot_take_are_said_not_dropped_silently() -> None:
    builder = SdkStyleBuilder()
    flyte_images.init(image_builder=builder)
    with pytest.warns(UserWarning, match=r"SdkStyleBuilder .*: no_cache, compression cannot be passed to it"):
        flyte_images.build(BASE, push=False, no_cache=True, compression="zstd")
    assert len(builder.calls) == 1


def test_what_an_sdk_image_builder_raises_is_an_image_build_error() -> None:
    flyte_images.init(image_builder=SdkStyleBuilder(fail=RuntimeError("no daemon here")))
    with pytest.raises(ImageBuildError, match=r"SdkStyleBuilder failed to build app:\w+: no daemon here") as caught:
        flyte_images.build(BASE, push=False)
    assert isinstance(caught.value, BuildError) and isinstance(caught.value.__cause__, RuntimeError)


def test_init_with_one_of_our_backends_builds_with_it(tmp_path: Path) -> None:
    fake = FakeBuilder()
    flyte_images.init(image_builder=fake)
    image = Image.from_base("python:3.12-slim").clone(name="fake-app").with_env_vars({"A": "1"})
    result = flyte_images.build(image, push=False)
    assert result.built and len(fake.requests) == 1 and fake.requests[0].tags == (result.uri,)


def test_init_refuses_an_object_that_cannot_build() -> None:
    for junk in (42, object(), SdkStyleBuilder):  # a class is not an instance
        with pytest.raises(InvalidBuilderError, match="not an image builder"):
            flyte_images.init(image_builder=junk)


# ----- secrets named by a path ------------------------------------------------------------------


def test_flytes_image_secret_example_is_accepted_where_flyte_accepts_it() -> None:
    """flyte's examples/image/image_secret.py: a string that is no secret key, in secret_mounts."""
    theirs = flyte.Image.from_debian_base(install_flyte=False).with_apt_packages("vim", secret_mounts=["/tmp/secret1"])
    assert theirs.uri
    ours = (
        Image.from_debian_base(install_flyte=False, name="example")
        .with_apt_packages("vim", secret_mounts=["/tmp/secret1"])
        .with_pip_packages("mypy", secret_mounts=[Secret(group="aws", key="id", as_env_var="AWS_ACCESS_KEY_ID")])
    )
    assert len(ours.identifier) == 32
    again = Image.from_debian_base(install_flyte=False, name="example").with_apt_packages(
        "vim", secret_mounts=["/tmp/secret2"]
    )
    assert (
        again.with_pip_packages(
            "mypy", secret_mounts=[Secret(group="aws", key="id", as_env_var="AWS_ACCESS_KEY_ID")]
        ).identifier
        != ours.identifier
    )


def test_building_it_fails_with_a_value_error_as_flytes_build_does() -> None:
    theirs = flyte.Image.from_debian_base(install_flyte=False).with_apt_packages("vim", secret_mounts=["/tmp/secret1"])
    with pytest.raises(ValueError, match="/TMP/SECRET1"):  # flyte's builder renders the layer
        asyncio.run(AptPackagesHandler.handle(theirs._layers[-1], Path("/tmp"), ""))
    ours = BASE.with_apt_packages("vim", secret_mounts=["/tmp/secret1"])
    for dry_run in (True, False):
        fake = FakeBuilder()
        with pytest.raises(InvalidLayerArgument) as caught:
            flyte_images.build(ours, push=False, builder=fake, dry_run=dry_run)
        message = str(caught.value)
        assert isinstance(caught.value, ValueError) and "'/tmp/secret1' is not a secret key" in message
        assert "SECRET1_FILE" in message and fake.requests == []


def test_a_secret_keyed_by_a_path_is_refused_or_taken_as_flyte_does() -> None:
    with pytest.raises(ValueError, match="Invalid environment variable name"):
        flyte.Secret(key="/tmp/secret1")
    with pytest.raises(InvalidLayerArgument, match=r"'/tmp/secret1' is not a secret key.*e\.g\. 'secret1'"):
        Secret(key="/tmp/secret1")
    # Told where it goes, flyte takes any key; so do we, as long as it fits a mount flag.
    flyte.Secret(key="/tmp/secret1", as_env_var="TOKEN")
    flyte.Secret(key="/tmp/secret1", mount=Path("/etc/flyte/secrets"))
    placed = Secret(key="/tmp/secret1", as_env_var="TOKEN")
    assert placed.source_env_var == "_TMP_SECRET1" and placed.build_id == "/tmp/secret1"
    assert Secret(key="/tmp/secret1", mount=Path("/etc/flyte/secrets")).key == "/tmp/secret1"
    for unsafe in ("a,target=/etc/passwd", "../x", "a b"):
        with pytest.raises(InvalidLayerArgument, match=r"Secret\.key"):
            Secret(key=unsafe, as_env_var="TOKEN")


def test_a_string_secret_that_could_break_its_mount_flag_stays_one_flag() -> None:
    from flyte_images._plan.plan import plan

    image = BASE.with_commands(["true"], secret_mounts=["x,target=/etc/passwd"])
    mounts = [line for line in plan(image).dockerfile.splitlines() if "type=secret" in line]
    assert mounts and all("/etc/passwd" not in line for line in mounts)


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_secret_keyed_by_a_path_reaches_its_step_on_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine_support import BUSYBOX, remove_image, run_in

    monkeypatch.setenv("_TMP_SECRET1", "value-of-the-path-keyed-secret")
    secret = Secret(key="/tmp/secret1", as_env_var="TOKEN")
    image = (
        Image.from_base(BUSYBOX)
        .clone(name="fi-test-pathsecret")
        .with_commands(['test "$TOKEN" = value-of-the-path-keyed-secret && echo ok > /seen'], secret_mounts=[secret])
    )
    result = flyte_images.build(image, force=True, quiet=True, push=False)
    try:
        assert result.built and run_in(result.uri, "cat /seen").strip() == "ok"
    finally:
        remove_image(result.uri)
