"""The build route: one staged plan, the engine part a subplan of it, options as one value, and
a deploy that asks about every image before it builds any."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from conftest import write_tree

import flyte_images
from flyte_images import ConfigError, Image
from flyte_images._append import engine_part
from flyte_images._build import BuildOptions, decide
from flyte_images._build.append import engine_subplan
from flyte_images._build.deploy import build_named
from flyte_images._files.statcache import cache_dir
from flyte_images._plan.plan import plan, staged_plan
from flyte_images.testing.fake import FakeBuilder


def _image(src: Path, name: str = "route") -> Image:
    return (
        Image.from_base("busybox:1")
        .clone(name=name, registry="registry.example:5000/team")
        .with_commands(["echo engine part"])
        .with_source_folder(src, dst="/app")
        .with_env_vars({"A": "1"})
    )


def test_the_engine_part_is_a_subplan_of_the_staged_plan(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"print(1)\n", 0o644), "pkg/b.txt": (b"b", 0o600)})
    image = _image(src)
    alone = plan(engine_part(image))
    with staged_plan(image) as staged:
        engine = engine_subplan(staged)
        assert engine.identifier == alone.identifier  # the same tag as planning it on its own
        assert engine.dockerfile == alone.dockerfile
        assert engine.context == staged.context  # nothing staged again
        assert engine.dockerfile_path is not None
        assert engine.dockerfile_path.read_text() == alone.dockerfile
        assert engine.identifier != staged.identifier
    assert len(list((cache_dir() / "staging").iterdir())) == 1  # one staging folder, not two


class _PushOnly(FakeBuilder):
    name: ClassVar[str] = "push-only"
    loads: ClassVar[bool] = False


def test_a_backend_that_cannot_load_is_refused_for_a_local_build(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"1", 0o644)})
    image = Image.from_base("busybox:1").clone(name="local-only").with_source_folder(src)
    with pytest.raises(ConfigError, match=r"push-only backend cannot load images"):
        flyte_images.build(image, builder=_PushOnly(), quiet=True)


def test_build_options_are_one_checked_value() -> None:
    options = BuildOptions.of(platform="linux/arm64", cache_from=["a"], ca_bundle="/etc/ssl/x.pem")
    assert options.platform == ("linux/arm64",) and options.cache_from == ("a",)
    assert options.ca_bundle == Path("/etc/ssl/x.pem")
    with pytest.raises(flyte_images.InvalidLayerArgument, match="platform"):
        BuildOptions.of(platform="linux/m68k")
    with pytest.raises(AttributeError):
        options.force = True  # type: ignore[misc]


def test_a_deploy_asks_about_every_image_at_once_and_stages_none_that_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flyte_images._registry import Existence

    asked: list[list[str]] = []

    def registry(questions: list[decide.Question]) -> list[object]:
        asked.append([q.uri for q in questions])
        return [Existence(q.uri, "exists", "sha256:" + "0" * 64, q.platforms) for q in questions]

    monkeypatch.setattr(decide, "_ask_registries", registry)
    images = []
    for n in range(3):
        src = tmp_path / f"src{n}"
        write_tree(src, {"a.py": (f"print({n})\n".encode(), 0o644)})
        images.append((f"env{n}", _image(src, f"app{n}")))
    cache = build_named(images, None, 2, BuildOptions(), None)
    assert len(asked) == 1  # one round for the whole deploy
    assert len(asked[0]) == 6  # each image and its engine part (the append route)
    assert set(cache.status.values()) == {"exists"}
    assert not (cache_dir() / "staging").exists()  # nothing staged for images that exist


def test_the_configured_ca_bundle_applies_to_options_made_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Options made by a caller (the flyte plugin, a deploy) without a CA bundle still mount the
    configured one, read when the build runs."""
    monkeypatch.setenv("FLYTE_IMAGES_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    assert BuildOptions().ca_bundle_path() == Path("/etc/ssl/certs/ca-certificates.crt")
    assert BuildOptions.of(ca_bundle="/other.pem").ca_bundle_path() == Path("/other.pem")
    monkeypatch.delenv("FLYTE_IMAGES_CA_BUNDLE")
    assert BuildOptions().ca_bundle_path() is None


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_an_append_checks_and_pushes_over_one_registry_session(
    tmp_path: Path, local_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine_support import BUSYBOX

    from flyte_images import _registry

    src = tmp_path / "src"
    write_tree(src, {"a.txt": (b"first\n", 0o644)})
    image = (
        Image.from_base(BUSYBOX)
        .clone(name="fi-test-one-session", registry=local_registry)
        .with_commands(["echo engine part > /part"])
        .with_source_folder(src, dst="/app")
    )
    assert flyte_images.build(image, quiet=True).path == "append"  # the engine part, built once
    (src / "a.txt").write_text("edited\n")
    opened = []
    real_init = _registry.Registry.__init__

    def counting(self: _registry.Registry, *args: object, **kwargs: object) -> None:
        opened.append(self)
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_registry.Registry, "__init__", counting)
    result = flyte_images.build(image, quiet=True)
    assert result.built and result.path == "append" and "which was in the registry" in result.reason
    assert len(opened) == 1  # the checks of the image and its engine part, and the push


@pytest.mark.parametrize("route", ["engine", "append"])
def test_a_registry_that_cannot_be_asked_stops_a_pushed_build_before_anything_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    from engine_support import free_port

    monkeypatch.delenv("CI", raising=False)  # the default, not CI's
    monkeypatch.setenv("FLYTE_IMAGES_REGISTRY_TIMEOUT", "2")
    monkeypatch.setenv("FLYTE_IMAGES_INSECURE_REGISTRIES", "127.0.0.1")
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"print(1)\n", 0o644)})
    image = _image(src).clone(registry=f"127.0.0.1:{free_port()}")  # nothing listens there
    fake = FakeBuilder()
    builder = fake if route == "engine" else None
    with pytest.raises(
        flyte_images.RegistryError, match=r"cannot tell whether 127\.0\.0\.1:\d+/route:\w+ is already built"
    ):
        flyte_images.build(image, builder=builder, quiet=True)
    assert fake.requests == [] and not list((cache_dir() / "staging").glob("*/context"))


def test_a_dry_run_refuses_a_secret_the_build_could_not_mount(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"a.py": (b"print(1)\n", 0o644)})
    image = _image(src).with_pip_packages("six", secret_mounts=["my token"])  # not a name a build can mount
    assert image.identifier  # describing it is fine
    with pytest.raises(flyte_images.InvalidLayerArgument, match="secret_mounts"):
        flyte_images.build(image, dry_run=True, builder=FakeBuilder(), quiet=True)
