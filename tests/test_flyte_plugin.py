"""flyte-images inside the real Flyte SDK (flyte 2.12.1, from the `dev` extra), without an engine:
the entry point flyte loads, the version gate, `from_flyte` for every layer kind flyte 2.12 has,
the uri flyte owns, and the checker's three answers. Builds on the engine: test_engine_flyte_plugin.py.

flyte is in the `dev` extra rather than a separate venv so that these tests call the SDK in process
and mypy checks the plugin against flyte's own types; the first test holds the line that matters:
the core never imports flyte.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import flyte
import pytest
from flyte import _image as fl
from flyte._internal.imagebuild.image_builder import ImageBuildEngine

import flyte_images
from flyte_images import Image, InvalidImageError, RegistryError, Secret, from_flyte
from flyte_images._flyte import FlyteConversionError, UnsupportedFlyteError, UntranslatableLayerError
from flyte_images._flyte.convert import _translators
from flyte_images._flyte.plugin import FlyteImagesBuilder, FlyteImagesChecker, _names_registry
from flyte_images._image.layers import (
    CodeBundle,
    DebianBase,
    PipPackages,
    PythonWheels,
    SourceFile,
    SourceFolder,
    UVScript,
)
from flyte_images._plan.plan import plan

PROJECTS = Path(__file__).resolve().parent.parent / "fixtures" / "projects"
TRANSLATED = {
    "PipPackages",
    "Requirements",
    "PythonWheels",
    "UVProject",
    "PoetryProject",
    "PixiProject",
    "UVScript",
    "PixiScript",
    "AptPackages",
    "Commands",
    "WorkDir",
    "DockerIgnore",
    "CopyConfig",
    "CodeBundleLayer",
    "Env",
}  # some forms are refused by name: Env values with $, wheels with pip options, file:// deps in scripts
REFUSED = {"_DockerLines"}  # flyte-internal raw lines; its default-image recipe's are what our from_debian_base is


@pytest.fixture(autouse=True)
def _flyte_state() -> Iterator[None]:
    """flyte keeps its init config process-wide; every test starts and ends without one."""
    import flyte._initialize as init

    saved = init._init_config
    init._init_config = None
    yield
    init._init_config = saved


def app() -> fl.Image:
    """A built flyte image on a plain base (no recipe), amd64 only."""
    return fl.Image.from_base("python:3.11-slim-bookworm").clone(
        name="app", registry="registry.example/team", platform=("linux/amd64",), extendable=True
    )


def app_ours() -> Image:
    """What `app()` is in flyte-images."""
    return Image.from_base("python:3.11-slim-bookworm").clone(
        name="app", registry="registry.example/team", platform=("linux/amd64",), extendable=True
    )


def last(image: fl.Image) -> object:
    return from_flyte(image)._layers[-1]


@dataclass
class Effects:
    """What a Dockerfile's last stage leaves in the image, as far as these tests compare it."""

    base: str = ""
    user: str = "root"  # the python bases used here run as root
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    apt: set[str] = field(default_factory=set)
    pip: set[str] = field(default_factory=set)
    scripts: list[str] = field(default_factory=list)

    def creates_flyte_user(self) -> bool:
        return any("useradd" in s and "flyte" in s and "/home/flyte" in s and "/root" in s for s in self.scripts)


def effects(dockerfile: str) -> Effects:
    """Reads a Dockerfile as ours or flyte's builder writes it (not a general parser): ENV values
    are expanded against earlier ARGs and ENVs, with the base's PATH as `<base>`."""
    found = Effects()
    args: dict[str, str] = {}
    for line in re.sub(r"\\\n\s*", " ", dockerfile).splitlines():
        word, _, rest = line.strip().partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "FROM":  # a new stage: only the last one is the image
            found, args = Effects(base=rest.split()[0], env={"PATH": "<base>"}), {}
        elif word in ("ARG", "ENV"):
            known = {**args, **found.env}
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                value = re.sub(r"\$\{?(\w+)\}?", lambda m: known.get(m[1], ""), value)  # noqa: B023 (used at once)
                (found.env if word == "ENV" else args)[key] = value
        elif word == "USER":
            found.user = rest
        elif word == "WORKDIR":
            found.workdir = rest.strip('"')
        elif word == "RUN":
            while rest.startswith("--"):  # mounts
                rest = rest.split(None, 1)[1]
            script = json.loads(rest)[-1] if rest.startswith("[") else rest
            found.scripts.append(script)
            for command, into in (("apt-get install", found.apt), ("uv pip install", found.pip)):
                if command in script:
                    words = shlex.split(script.split(command, 1)[1].split("&&")[0])
                    into.update(w for w in words if not w.startswith(("-", "$")))
    return found


def flyte_dockerfile(image: fl.Image, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Dockerfile flyte 2.12.1's own docker builder writes for `image` (its dry run prints it)."""
    from flyte._internal.imagebuild import docker_builder

    async def no_buildx_builder() -> list[str]:
        return ["docker", "buildx", "build"]

    printed: list[str] = []
    monkeypatch.setattr(docker_builder.DockerImageBuilder, "_build_command_prefix", staticmethod(no_buildx_builder))
    monkeypatch.setattr(docker_builder.click, "secho", lambda message, **_kw: printed.append(str(message)))
    asyncio.run(docker_builder.DockerImageBuilder()._build_image(image, push=False, dry_run=True))
    (text,) = [m.removeprefix("Dockerfile: ") for m in printed if m.startswith("Dockerfile: ")]
    return text


def our_dockerfile(image: Image) -> str:
    return plan(image).dockerfile


# ----- the seam: optional dependency, entry point, version gate ------------------------------


def test_the_core_never_imports_flyte() -> None:
    script = (
        "import sys, flyte_images, flyte_images._cli, flyte_images._build, flyte_images._flyte\n"
        "flyte_images.from_flyte\n"
        "assert 'flyte' not in sys.modules, sorted(m for m in sys.modules if m.split('.')[0] == 'flyte')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    assert "from_flyte" in flyte_images.__all__


def test_flyte_finds_the_builder_by_name_and_gets_our_checker() -> None:
    builder = ImageBuildEngine._get_builder("flyte-images")  # type: ignore[arg-type]
    assert isinstance(builder, FlyteImagesBuilder)
    assert str(builder) == "flyte-images"
    assert builder.get_checkers() == [FlyteImagesChecker]
    assert inspect.iscoroutinefunction(FlyteImagesChecker.image_exists)
    assert list(inspect.signature(builder.build_image).parameters) == ["image", "dry_run", "wait", "force"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # rich_click, imported by flyte
def test_flyte_init_and_its_config_file_select_the_builder(tmp_path: Path) -> None:
    from flyte._initialize import _get_init_config

    flyte.init(image_builder="flyte-images")  # type: ignore[arg-type]
    config = _get_init_config()
    assert config is not None and config.image_builder == "flyte-images"
    path = tmp_path / "config.yaml"
    path.write_text("image:\n  builder: flyte-images\n")
    flyte.init_from_config(str(path))
    config = _get_init_config()
    assert config is not None and config.image_builder == "flyte-images"


@pytest.mark.parametrize("installed", ["2.12.0", "2.12.1", "2.12.7", "2.12.2rc1"])
def test_flyte_2_12_is_supported(monkeypatch: pytest.MonkeyPatch, installed: str) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda _name: installed)
    assert FlyteImagesBuilder().flyte_version == installed


@pytest.mark.parametrize("installed", ["2.13.0", "2.11.4", "3.0.0", "not-a-version"])
def test_other_flyte_releases_are_refused_naming_both_versions(monkeypatch: pytest.MonkeyPatch, installed: str) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda _name: installed)
    with pytest.raises(UnsupportedFlyteError, match=rf"supports flyte 2\.12\.x .*but flyte {installed} is installed"):
        FlyteImagesBuilder()
    with pytest.raises(UnsupportedFlyteError, match="flyte-images\\[flyte\\]"):
        from_flyte(app())
    # flyte reports a builder that fails to load with our reason in its own error
    from flyte.errors import ImageBuildError

    with pytest.raises(ImageBuildError, match=rf"flyte {installed} is installed"):
        ImageBuildEngine._get_builder("flyte-images")  # type: ignore[arg-type]


def test_missing_flyte_is_named_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", absent)
    with pytest.raises(UnsupportedFlyteError, match=r"flyte is not installed.*pip install 'flyte-images\[flyte\]'"):
        FlyteImagesBuilder()


# ----- every layer kind of flyte 2.12 -----------------------------------------------------------


def test_every_layer_kind_of_flyte_is_translated_or_refused_by_name() -> None:
    kinds: set[type] = set()
    pending = list(fl.Layer.__subclasses__())
    while pending:
        kind = pending.pop()
        pending += kind.__subclasses__()
        if kind.__module__ == fl.__name__:
            kinds.add(kind)
    assert {k.__name__ for k in kinds} == TRANSLATED | REFUSED  # a new kind in flyte fails here first
    assert set(_translators()) == kinds


def test_pip_packages_with_every_option_and_a_secret() -> None:
    image = app().with_pip_packages(
        "numpy==2.1.0",
        "pandas>=2",
        index_url="https://pypi.example/simple",
        extra_index_urls=["https://extra.example/simple"],
        pre=True,
        extra_args="--no-cache",
        secret_mounts=["pip-token", flyte.Secret(key="gh", group="ci", as_env_var="GH_TOKEN")],
    )
    assert last(image) == PipPackages(
        packages=("numpy==2.1.0", "pandas>=2"),
        index_url="https://pypi.example/simple",
        extra_index_urls=("https://extra.example/simple",),
        pre=True,
        extra_args="--no-cache",
        secret_mounts=(Secret("pip-token"), Secret("gh", group="ci", as_env_var="GH_TOKEN")),
    )


def test_pip_packages_without_packages_is_an_error_naming_the_layer() -> None:
    with pytest.raises(FlyteConversionError, match=r"layer 1 of the flyte image 'app' \(PipPackages\).*packages"):
        from_flyte(app().with_pip_packages())


def test_requirements_uv_poetry_and_pixi_projects(tmp_path: Path) -> None:
    reqs = PROJECTS / "reqs" / "requirements.txt"
    expected = app_ours().with_requirements(reqs, index_url="https://pypi.example/simple")
    assert from_flyte(app().with_requirements(reqs, index_url="https://pypi.example/simple")) == expected
    uv = PROJECTS / "uvproj" / "pyproject.toml"
    image = app().with_uv_project(uv, extra_args="--no-dev", project_install_mode="install_project")
    expected = app_ours().with_uv_project(
        uv, uvlock=uv.parent / "uv.lock", extra_args="--no-dev", project_install_mode="install_project"
    )
    assert from_flyte(image) == expected
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '1'\n")  # no uv.lock
    assert from_flyte(app().with_uv_project(tmp_path / "pyproject.toml")) == app_ours().with_uv_project(
        tmp_path / "pyproject.toml"
    )
    poetry = PROJECTS / "poetryproj" / "pyproject.toml"
    image = app().with_poetry_project(poetry, extra_args="--only main", secret_mounts="tok")
    assert from_flyte(image) == app_ours().with_poetry_project(poetry, extra_args="--only main", secret_mounts="tok")
    (tmp_path / "pixi.toml").write_text("[workspace]\nchannels = ['conda-forge']\n")
    image = app().with_pixi_project(tmp_path / "pixi.toml", environment="gpu", extra_args="--frozen")
    expected = app_ours().with_pixi_project(tmp_path / "pixi.toml", environment="gpu", extra_args="--frozen")
    assert from_flyte(image) == expected


def test_uv_and_pixi_scripts(tmp_path: Path) -> None:
    image = fl.Image.from_uv_script(
        PROJECTS / "tool.py", name="tool", python_version=(3, 11), platform=("linux/amd64",), pre=True
    )
    expected = Image.from_uv_script(
        PROJECTS / "tool.py", name="tool", python_version=(3, 11), platform=("linux/amd64",), pre=True
    )
    assert from_flyte(image) == expected
    script = tmp_path / "gdal.py"
    script.write_text('# /// script\n# dependencies = ["flyte"]\n# [tool.pixi.dependencies]\n# gdal = "*"\n# ///\n')
    image = fl.Image.from_pixi_script(script, name="gdal", platform=("linux/amd64", "linux/arm64"))
    image = image.clone(python_version=tuple(Image.from_debian_base().python_version))  # type: ignore[arg-type]
    expected = Image.from_pixi_script(script, name="gdal", platform=("linux/amd64", "linux/arm64"))
    assert from_flyte(image)._layers[-1] == expected._layers[-1]
    local = tmp_path / "local.py"
    local.write_text('# /// script\n# dependencies = ["lib @ file:///src/lib"]\n# ///\n')
    with pytest.raises(UntranslatableLayerError, match=r"\(UVScript\): .*file:// URL.*with_uv_project"):
        from_flyte(app().clone(addl_layer=fl.UVScript(script=local)))


def test_python_wheels_and_their_unsupported_options(tmp_path: Path) -> None:
    (tmp_path / "pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
    image = app().clone(addl_layer=fl.PythonWheels(wheel_dir=tmp_path, package_name="pkg"))
    assert last(image) == PythonWheels(wheel_dir=tmp_path, package_name="pkg")
    with_index = app().clone(addl_layer=fl.PythonWheels(wheel_dir=tmp_path, package_name="pkg", index_url="https://x"))
    with pytest.raises(UntranslatableLayerError, match=r"\(PythonWheels\): installing wheels with index_url"):
        from_flyte(with_index)


def test_system_layers_and_secret_mounts() -> None:
    mounted = flyte.Secret(key="netrc", mount=Path("/etc/flyte/secrets"))
    image = (
        app()
        .with_apt_packages("git", "curl", secret_mounts=[mounted])
        .with_commands(["echo one", "echo two"], secret_mounts="tok")
        .with_workdir("/app")
        .with_env_vars({"B": "2", "A": "1 and spaces"})
        .with_dockerignore(PROJECTS / ".dockerignore")
    )
    expected = (
        app_ours()
        .with_apt_packages("git", "curl", secret_mounts=[Secret("netrc", mount=Path("/etc/flyte/secrets"))])
        .with_commands(["echo one", "echo two"], secret_mounts="tok")
        .with_workdir("/app")
        .with_env_vars({"B": "2", "A": "1 and spaces"})
        .with_dockerignore(PROJECTS / ".dockerignore")
    )
    assert from_flyte(image) == expected


def test_env_values_that_expand_are_refused_naming_the_variable() -> None:
    with pytest.raises(UntranslatableLayerError, match=r"\(Env\): PATH='/opt/bin:\$PATH' refers to another"):
        from_flyte(app().with_env_vars({"A": "1", "PATH": "/opt/bin:$PATH"}))
    assert from_flyte(app().with_env_vars({})) == app_ours()  # flyte renders an empty Env as nothing


def test_source_folders_and_files_land_where_flyte_puts_them(tmp_path: Path) -> None:
    src = tmp_path / "pkg"
    src.mkdir()
    (tmp_path / "a.txt").write_text("a")
    ours = from_flyte(
        app()
        .with_source_folder(src)  # flyte: ./pkg
        .with_source_folder(src, dst="/srv/code")  # flyte: the contents into /srv/code
        .with_source_folder(src, dst="/opt", copy_contents_only=True)
        .with_source_file([tmp_path / "a.txt"], dst="/etc/app/")
    )
    assert ours._layers == (
        SourceFolder(src=src, dst="./pkg", copy_contents_only=True),
        SourceFolder(src=src, dst="/srv/code", copy_contents_only=True),
        SourceFolder(src=src, dst="/opt", copy_contents_only=True),
        SourceFile(src=tmp_path / "a.txt", dst="/etc/app/"),
    )


def test_code_bundles(tmp_path: Path) -> None:
    unresolved = from_flyte(app().with_code_bundle(copy_style="all", dst="/code"))
    assert unresolved == app_ours().with_code_bundle(copy_style="all", dst="/code")  # copies nothing, like flyte
    resolved = fl.resolve_code_bundle_layer(app().with_code_bundle(copy_style="all", dst="/code"), "none", tmp_path)
    assert last(resolved) == SourceFolder(src=tmp_path, dst="/code", copy_contents_only=True)  # flyte: a CopyConfig
    modules = app().clone(addl_layer=fl.CodeBundleLayer(copy_style="loaded_modules", root_dir=tmp_path))
    assert last(modules) == CodeBundle(copy_style="loaded_modules", dst=".", root_dir=tmp_path)


def test_raw_dockerfile_lines_are_refused_by_name_never_dropped() -> None:
    image = app().with_apt_packages("git").clone(addl_layer=fl._DockerLines(("USER nobody",)))
    with pytest.raises(
        UntranslatableLayerError, match=r"layer 2 of the flyte image 'app' \(_DockerLines\): raw"
    ) as info:
        from_flyte(image)
    assert info.value.kind == "_DockerLines"
    assert isinstance(info.value, InvalidImageError)


def test_a_layer_kind_flyte_may_add_later_is_refused_by_name() -> None:
    class Future(fl.Commands):  # a subclass is another kind: never translated as its parent
        pass

    image = app().clone(addl_layer=Future(commands=("x",)))
    with pytest.raises(UntranslatableLayerError, match=r"layer 1 .* is a Future, a layer kind flyte-images does not"):
        from_flyte(image)


# ----- constructors ------------------------------------------------------------------------------


def test_debian_base_without_flyte_is_our_debian_base_without_flyte() -> None:
    image = fl.Image.from_debian_base(python_version=(3, 11), install_flyte=False, name="app", registry="r.example")
    expected = Image.from_debian_base(
        python_version=(3, 11),
        install_flyte=False,
        name="app",
        registry="r.example",
        platform=("linux/amd64", "linux/arm64"),  # flyte's default for from_debian_base, kept: flyte owns the tag
    )
    ours = from_flyte(image.with_pip_packages("six"))
    assert ours == expected.with_pip_packages("six")
    # flyte's recipe (labels, user, workdir, env, apt) is our one base layer, never translated again
    assert [type(layer) for layer in ours._layers] == [DebianBase, PipPackages]


def test_flyte_s_recipe_and_ours_have_the_same_effect(monkeypatch: pytest.MonkeyPatch) -> None:
    image = fl.Image.from_debian_base(python_version=(3, 11), install_flyte=False, name="app", registry="r.example")
    image = image.with_pip_packages("six")
    theirs, mine = effects(flyte_dockerfile(image, monkeypatch)), effects(our_dockerfile(from_flyte(image)))
    assert mine.base == theirs.base == "python:3.11-slim-bookworm"
    assert (mine.user, mine.workdir) == (theirs.user, theirs.workdir) == ("flyte", "/home/flyte")
    assert mine.creates_flyte_user() and theirs.creates_flyte_user()
    (recipe_env,) = [dict(layer.env_vars) for layer in image._layers if isinstance(layer, fl.Env)]
    assert set(recipe_env) == {"VIRTUAL_ENV", "PATH", "PYTHONPATH", "UV_LINK_MODE"}
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "UV_LINK_MODE"):
        assert mine.env[key] == theirs.env[key] == recipe_env[key], key
    # flyte's builder puts /opt/venv/bin in front twice and appends nvidia paths: the same lookup
    assert mine.env["PATH"].split(":")[0] == theirs.env["PATH"].split(":")[0] == "/opt/venv/bin"
    assert "<base>" in mine.env["PATH"].split(":") and "<base>" in theirs.env["PATH"].split(":")
    assert mine.apt == theirs.apt == {"build-essential", "ca-certificates"}
    assert mine.pip == theirs.pip == {"six"}
    assert our_dockerfile(from_flyte(image)).count("useradd") == 1


def test_a_copy_into_flyte_s_layout_is_owned_by_flyte(tmp_path: Path) -> None:
    base = fl.Image.from_debian_base(python_version=(3, 11), install_flyte=False, name="app")
    dockerfile = our_dockerfile(from_flyte(base.with_source_folder(tmp_path)))
    assert "COPY --chown=flyte:flyte " in dockerfile  # as flyte's builder copies
    assert dockerfile.rstrip().endswith("USER flyte")


def test_flyte_s_recipe_on_a_base_of_the_user_s_is_ours_on_that_base() -> None:
    image = fl.Image.from_debian_base(python_version=(3, 11), install_flyte=False, name="app")
    image = image.clone(base_image="mirror.example/python:3.11-slim-bookworm").with_apt_packages("git")
    ours = from_flyte(image)
    assert ours.base_image == "mirror.example/python:3.11-slim-bookworm"
    assert [type(layer).__name__ for layer in ours._layers] == ["DebianBase", "AptPackages"]
    assert effects(our_dockerfile(ours)).user == "flyte"


def test_uv_and_pixi_scripts_sit_on_our_debian_base_without_flyte_s_recipe_again() -> None:
    ours = from_flyte(fl.Image.from_uv_script(PROJECTS / "tool.py", name="tool", python_version=(3, 11)))
    assert [type(layer) for layer in ours._layers] == [DebianBase, UVScript]
    assert ours._layers[0] == DebianBase(install_flyte=False)


def test_flyte_s_published_default_image_is_our_debian_base_with_that_flyte() -> None:
    image = fl.Image.from_debian_base(python_version=(3, 12), registry="r.example", name="app").with_apt_packages("git")
    assert image.base_image == "ghcr.io/flyteorg/flyte:py3.12-v2.12.1"
    expected = Image.from_debian_base(
        python_version=(3, 12), flyte_version="2.12.1", registry="r.example", name="app", platform=image.platform
    )
    ours = from_flyte(image)
    assert ours == expected.with_apt_packages("git")
    # Built FROM the published image: no part of flyte's layout again, the step as root, then flyte.
    assert plan(ours).instructions == (
        "FROM ghcr.io/flyteorg/flyte:py3.12-v2.12.1",
        "ARG TARGETARCH",
        "USER root",
        *plan(ours).instructions[3:-1],
        "USER flyte",
    )
    found = effects(our_dockerfile(ours))
    assert found.apt == {"git"} and len(found.scripts) == 1 and not found.creates_flyte_user()
    assert "VIRTUAL_ENV" not in found.env and found.workdir == "/"  # the published image's, untouched


def test_flyte_s_unmodified_default_image_is_our_reference_to_it() -> None:
    image = fl.Image.from_debian_base(python_version=(3, 12))
    ours = from_flyte(image)
    assert ours == Image.from_debian_base(python_version=(3, 12), platform=("linux/amd64", "linux/arm64"))
    assert ours.is_reference and ours.uri == image.uri == "ghcr.io/flyteorg/flyte:py3.12-v2.12.1"
    # adding to it goes FROM it as root, as on any from_debian_base() of ours
    extended = our_dockerfile(ours.clone(name="more").with_apt_packages("git"))
    assert "USER root" in extended and extended.rstrip().endswith("USER flyte")


def test_a_pre_release_of_flyte_is_its_published_image_too() -> None:
    image = fl.Image.from_debian_base(python_version=(3, 12), flyte_version="2.13.0b1", name="app")
    assert image.base_image == "ghcr.io/flyteorg/flyte:py3.12-v2.13.0b1"
    ours = from_flyte(image.with_pip_packages("six"))
    assert ours.base_image == image.base_image
    assert ours._layers[0] == DebianBase(install_flyte=True, flyte_version="2.13.0b1", published=True)
    assert f"\nFROM {image.base_image}\nARG TARGETARCH\nUSER root\n" in our_dockerfile(ours)
    assert from_flyte(fl.Image.from_debian_base(python_version=(3, 12), flyte_version="2.13.0b1")).is_reference
    pinned = "ghcr.io/flyteorg/flyte:py3.12-v2.12.1@sha256:" + "0" * 64  # a digest: not the tag flyte names
    assert from_flyte(fl.Image.from_base(pinned)) == Image.from_base(pinned)


def test_any_other_base_is_from_base(tmp_path: Path) -> None:
    assert from_flyte(app().with_pip_packages("six")) == app_ours().with_pip_packages("six")
    found = effects(our_dockerfile(from_flyte(app().with_pip_packages("six").with_source_folder(tmp_path))))
    # none of flyte's layout: the base's user and folder, no venv of ours, copies not chowned
    assert (found.user, found.workdir, found.env) == ("root", "/", {"PATH": "<base>"})
    assert not found.creates_flyte_user() and "--chown" not in our_dockerfile(
        from_flyte(app().with_source_folder(tmp_path))
    )


def test_references_dockerfiles_and_image_refs(tmp_path: Path) -> None:
    reference = from_flyte(fl.Image.from_base("ghcr.io/acme/base:1"))
    assert reference.is_reference and reference.uri == "ghcr.io/acme/base:1"
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    ours = from_flyte(fl.Image.from_dockerfile(dockerfile, registry="r.example", name="df"))
    assert (ours.dockerfile, ours.registry, ours.name, ours._layers) == (dockerfile, "r.example", "df", ())
    flyte.init(images={"gpu": "ghcr.io/acme/gpu:2"})
    assert from_flyte(fl.Image.from_ref_name("gpu")).uri == "ghcr.io/acme/gpu:2"  # flyte's image refs first
    with pytest.raises(flyte_images.ConfigError, match="nope"):
        from_flyte(fl.Image.from_ref_name("nope"))
    with pytest.raises(FlyteConversionError, match=r"expects a flyte\.Image, got Image"):
        from_flyte(Image.from_base("x:1"))  # type: ignore[arg-type]


# ----- flyte owns the tag ----------------------------------------------------------------------------


def test_the_plan_takes_flyte_s_uri_and_keeps_our_identifier_in_the_label() -> None:
    ours = from_flyte(app().with_pip_packages("six"))
    planned = plan(ours, uri="registry.example/team/app:flyte-tag")
    assert planned.uri == "registry.example/team/app:flyte-tag"
    assert planned.identifier == ours.identifier
    assert dict(planned.labels) == {"dev.flyte-images.identifier": ours.identifier}
    assert plan(ours).uri == ours.uri != planned.uri


def test_the_plugin_builds_at_flyte_s_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte_images import _build

    calls: list[tuple[Image, _build.BuildOptions, str]] = []

    def fake_build_image(image: Image, options: _build.BuildOptions, *, uri: str) -> flyte_images.ImageBuild:
        calls.append((image, options, uri))
        return flyte_images.ImageBuild(uri, built=True)

    monkeypatch.setattr(_build, "build_image", fake_build_image)
    image = app().with_pip_packages("six")
    result = asyncio.run(FlyteImagesBuilder().build_image(image, dry_run=False, force=True))
    assert isinstance(result, flyte.ImageBuild)
    assert result.uri == image.uri and result.remote_run is None
    ((ours, options, uri),) = calls
    assert ours == from_flyte(image)
    assert (options.dry_run, options.force, options.push, uri) == (False, True, True, image.uri)
    local = fl.Image.from_base("python:3.11-slim-bookworm").clone(name="local", extendable=True)
    local = local.with_env_vars({"A": "1"})
    asyncio.run(FlyteImagesBuilder().build_image(local, dry_run=True))
    _image, options, uri = calls[-1]
    assert (options.dry_run, options.force, options.push, uri) == (True, False, False, local.uri)  # no registry: load


def test_build_image_refuses_a_uri_that_is_not_an_image_reference() -> None:
    with pytest.raises(flyte_images.InvalidLayerArgument, match="uri"):
        image = Image.from_base("x:1").clone(name="x")
        flyte_images._build.build_image(image, flyte_images._build.BuildOptions(dry_run=True), uri="two words:1")


# ----- the checker -----------------------------------------------------------------------------


def test_which_uris_name_a_registry() -> None:
    assert _names_registry("127.0.0.1:5000/app:1") and _names_registry("ghcr.io/a/b:1")
    assert _names_registry("localhost/app:1")
    assert not _names_registry("app:1") and not _names_registry("team/app:1")


def test_a_registry_that_cannot_be_reached_is_cannot_tell_never_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine_support import free_port

    monkeypatch.setenv("FLYTE_IMAGES_REGISTRY_TIMEOUT", "5")
    with pytest.raises(RegistryError, match=r"cannot tell whether 127\.0\.0\.1:\d+/app:t1 is already built"):
        asyncio.run(FlyteImagesChecker.image_exists(f"127.0.0.1:{free_port()}/app", "t1", ("linux/amd64",)))


def test_an_image_without_registry_is_asked_of_the_local_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte_images._build import backends as _builders

    class Engine:
        name = "stub"

        def local_exists(self, reference: str) -> bool | None:
            return {"app:there": True, "app:gone": False}.get(reference)

    monkeypatch.setattr(_builders, "get_builder", lambda name=None: Engine())
    assert asyncio.run(FlyteImagesChecker.image_exists("app", "there")) == "app:there"
    assert asyncio.run(FlyteImagesChecker.image_exists("app", "gone")) is None
    with pytest.raises(RegistryError, match="cannot tell whether app:unsure is in the local engine"):
        asyncio.run(FlyteImagesChecker.image_exists("app", "unsure"))
