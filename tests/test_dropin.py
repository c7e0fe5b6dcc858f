"""Flyte 2.12 users port by changing an import: the Image API and the behaviours they rely on.

Each section is one point of the drop-in issue, with flyte 2.12.1's public behaviour as the
reference. Real builds are in test_engine_dropin.py; pixi images are tested here up to the
staged context (no conda channel or pixi image can be reached where the tests run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

import flyte_images
from flyte_images import Image, ImageBuild, ImageCache
from flyte_images._cli import main
from flyte_images._plan.plan import plan, staged_plan

BASE = Image.from_debian_base(python_version=(3, 11), install_flyte=False)


def _dests(image: Image) -> set[str]:
    return {s.dest for s in plan(image).manifest}


# ----- 1. with_code_bundle, with_pixi_project, from_pixi_script ------------------------------


@pytest.fixture
def pixi_project(tmp_path: Path) -> Path:
    root = tmp_path / "pixiproj"
    (root / "src").mkdir(parents=True)
    (root / "pixi.toml").write_text('[workspace]\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n')
    (root / "pixi.lock").write_text("version: 6\n")
    (root / "src" / "app.py").write_text("print(1)\n")
    return root


def test_pixi_project_locked_install_becomes_the_environment(pixi_project: Path) -> None:
    from flyte_images._image.layers import PixiProject

    image = BASE.with_pixi_project(pixi_project / "pixi.toml", environment="gpu").with_pip_packages("six")
    assert isinstance(image._layers[1], PixiProject)
    made = plan(image)
    text = made.dockerfile
    pixi = "--mount=type=bind,from=ghcr.io/prefix-dev/pixi:0.72.2,source=/usr/local/bin/pixi,target=/usr/local/bin/pixi"
    assert pixi in text  # mounted into its install step, never copied into the image
    assert "pixi install --manifest-path /opt/pixi-project/pixi.toml --environment gpu --locked" in text
    assert (
        "ENV VIRTUAL_ENV=/opt/pixi-project/.pixi/envs/gpu UV_PYTHON=/opt/pixi-project/.pixi/envs/gpu/bin/python" in text
    )
    # A later pip layer installs into the pixi environment (UV_PYTHON), not with --system.
    assert text.index("pixi install") < text.index('uv pip install \\"six\\"')
    assert {"_fi/1/pixi.toml", "_fi/1/pixi.lock"} <= {s.dest for s in made.manifest}
    # The manifest and the lock are the identifier; the project's code is not (dependencies only).
    before = image.identifier
    (pixi_project / "src" / "app.py").write_text("print(2)\n")
    assert image.identifier == before
    (pixi_project / "pixi.lock").write_text("version: 6\n# relocked\n")
    assert image.identifier != before


def test_pixi_frozen_replaces_locked_and_a_folder_is_searched_like_pixi(pixi_project: Path) -> None:
    frozen = plan(BASE.with_pixi_project(pixi_project, extra_args="--frozen")).dockerfile
    assert "--environment default --frozen" in frozen and "--locked" not in frozen
    (pixi_project / "pixi.lock").unlink()
    unlocked = plan(BASE.with_pixi_project(pixi_project)).dockerfile
    assert 'pixi install --manifest-path /opt/pixi-project/pixi.toml --environment default"' in unlocked
    pyproject_only = pixi_project.parent / "pyproj"
    pyproject_only.mkdir()
    (pyproject_only / "pyproject.toml").write_text("[project]\nname='p'\n[tool.pixi.workspace]\nchannels=[]\n")
    assert "--manifest-path /opt/pixi-project/pyproject.toml" in plan(BASE.with_pixi_project(pyproject_only)).dockerfile


def test_pixi_arguments_and_manifest_names_are_checked(pixi_project: Path) -> None:
    with pytest.raises(flyte_images.InvalidLayerArgument, match="environment"):
        BASE.with_pixi_project(pixi_project / "pixi.toml", environment="GPU env")
    (pixi_project / "deps.toml").write_text("")
    with pytest.raises(flyte_images.SourceError, match=r"pixi\.toml or pyproject\.toml"):
        _ = BASE.with_pixi_project(pixi_project / "deps.toml").identifier


def test_pixi_install_project_copies_the_folder_and_keeps_manifest_and_lock(pixi_project: Path) -> None:
    (pixi_project / ".dockerignore").write_text("*.toml\n*.lock\n")
    image = BASE.with_pixi_project(pixi_project, project_install_mode="install_project")
    assert {"_fi/1/pixi.toml", "_fi/1/pixi.lock", "_fi/1/src/app.py"} <= _dests(image)
    with staged_plan(image) as staged:
        assert staged.context is not None
        assert (staged.context / "_fi/1/pixi.toml").read_text().startswith("[workspace]")
        assert (staged.context / "_fi/1/pixi.lock").is_file()
    before = image.identifier
    (pixi_project / "src" / "app.py").write_text("print(2)\n")
    assert image.identifier != before  # the whole project is in the image


PIXI_SCRIPT = """#!/usr/bin/env -S pixi run --script
# /// script
# requires-python = ">=3.12"
# dependencies = ["flyte==2.12.1", "httpx[http2]>=0.27"]
#
# [tool.pixi.dependencies]
# gdal = "*"
#
# [tool.pixi.target.linux-64.dependencies]
# libgdal-arrow-parquet = "*"
# ///
print("code")
"""


def test_pixi_script_lowers_its_block_to_a_manifest(tmp_path: Path) -> None:
    from flyte_images._image.layers import PixiScript

    script = tmp_path / "gdal_task.py"
    script.write_text(PIXI_SCRIPT)
    image = Image.from_pixi_script(script, name="gdal")
    layer = image._layers[-1]
    assert isinstance(layer, PixiScript) and layer.platforms == ("linux-64",)
    assert image.name == "gdal" and plan(image).dockerfile.count("pixi install") == 1
    with staged_plan(image) as staged:
        assert staged.context is not None
        manifest = tomllib.loads((staged.context / "_fi/1/pixi.toml").read_text())
    assert manifest["workspace"] == {"channels": ["conda-forge"], "platforms": ["linux-64"]}
    assert manifest["dependencies"] == {"gdal": "*", "python": ">=3.12"}
    assert manifest["pypi-dependencies"] == {"flyte": "==2.12.1", "httpx": {"version": ">=0.27", "extras": ["http2"]}}
    assert manifest["target"] == {"linux-64": {"dependencies": {"libgdal-arrow-parquet": "*"}}}
    # Only the block is the image: editing the code keeps the tag, editing the block changes it.
    before = image.identifier
    script.write_text(PIXI_SCRIPT.replace('print("code")', 'print("other code")'))
    assert image.identifier == before
    script.write_text(PIXI_SCRIPT.replace('gdal = "*"', 'gdal = ">=3.9"'))
    assert image.identifier != before
    (tmp_path / "gdal_task.py.pixi.lock").write_text("version: 6\n")
    assert "--locked" in plan(image).dockerfile and "_fi/1/pixi.lock" in _dests(image)


def test_pixi_script_platforms_must_cover_the_image(tmp_path: Path) -> None:
    script = tmp_path / "t.py"
    script.write_text('# /// script\n# [tool.pixi.workspace]\n# platforms = ["linux-64"]\n# ///\n')
    multi = Image.from_pixi_script(script, name="t", platform=("linux/amd64", "linux/arm64"))
    with pytest.raises(flyte_images.SourceError, match="linux-aarch64"):
        _ = multi.identifier
    script.write_text("# /// script\n# dependencies = [\"a; python_version < '3.9'\"]\n# ///\n")
    with pytest.raises(flyte_images.SourceError, match="markers"):
        _ = Image.from_pixi_script(script, name="t").identifier


@pytest.fixture
def code_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "used_mod_dropin.py").write_text("X = 1\n")
    (root / "unused_mod_dropin.py").write_text("Y = 2\n")
    (root / "data.csv").write_text("a,b\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")
    monkeypatch.syspath_prepend(str(root))
    import pkg.used_mod_dropin  # noqa: F401 - a module of the project this process has loaded

    yield root
    for name in ("pkg.used_mod_dropin", "pkg"):
        sys.modules.pop(name, None)


def test_code_bundle_is_deferred_until_a_deploy_resolves_it(code_root: Path) -> None:
    from flyte_images._image.image import resolve_code_bundle_layer
    from flyte_images._image.layers import CodeBundle

    image = BASE.with_code_bundle()
    layer = image._layers[-1]
    assert isinstance(layer, CodeBundle) and (layer.copy_style, layer.dst, layer.root_dir) == (
        "loaded_modules",
        ".",
        None,
    )
    assert plan(image).dockerfile == plan(BASE).dockerfile  # nothing to copy: the code comes with the run
    assert image.identifier != BASE.identifier
    with pytest.raises(flyte_images.InvalidLayerArgument, match="copy_style"):
        BASE.with_code_bundle(copy_style="some")  # type: ignore[arg-type]
    # Any copy style but "none" bundles the code separately: the layer goes.
    assert resolve_code_bundle_layer(image, "loaded_modules", code_root)._layers == BASE._layers


def test_code_bundle_all_copies_the_root_and_loaded_modules_only_imported_files(code_root: Path) -> None:
    from flyte_images._image.image import resolve_code_bundle_layer

    every = resolve_code_bundle_layer(BASE.with_code_bundle(copy_style="all", dst="/app"), "none", code_root)
    assert 'COPY --chown=flyte:flyte ["_fi/1/", "/app/"]' in plan(every).dockerfile
    assert {"_fi/1/data.csv", "_fi/1/unused_mod_dropin.py", "_fi/1/pkg/used_mod_dropin.py"} <= _dests(every)
    assert "_fi/1/.git/HEAD" not in _dests(every)
    loaded = resolve_code_bundle_layer(BASE.with_code_bundle(), "none", code_root)
    assert {d for d in _dests(loaded) if d.startswith("_fi/1/")} == {
        "_fi/1/pkg/__init__.py",
        "_fi/1/pkg/used_mod_dropin.py",
    }
    with staged_plan(loaded) as staged:
        assert staged.context is not None
        assert (staged.context / "_fi/1/pkg/used_mod_dropin.py").read_text() == "X = 1\n"
    before = loaded.identifier
    (code_root / "pkg" / "used_mod_dropin.py").write_text("X = 2\n")
    assert loaded.identifier != before


# ----- 2. from_debian_base as Flyte users know it ----------------------------------------------


def test_the_default_is_flytes_published_image_used_as_is() -> None:
    image = Image.from_debian_base(python_version=(3, 12))
    assert image.is_reference
    assert image.uri == "ghcr.io/flyteorg/flyte:py3.12-v2.12.1"
    assert Image.from_debian_base(python_version=(3, 11), flyte_version="2.10.0").uri == (
        "ghcr.io/flyteorg/flyte:py3.11-v2.10.0"
    )
    assert Image.from_debian_base(python_version=(3, 11), flyte_version="v2.10.0").uri.endswith(":py3.11-v2.10.0")
    assert flyte_images.build(image).built is False  # never built


def test_layers_on_the_published_image_build_from_it() -> None:
    image = Image.from_debian_base(python_version=(3, 12)).with_pip_packages("numpy")
    assert not image.is_reference and image.uri.startswith("flyte:")
    lines = plan(image).dockerfile.splitlines()
    assert lines[:4] == [  # uv's stage first (mounted by the steps that run it), then the published image
        "FROM scratch AS flyte-images-uv",
        "ARG TARGETARCH",
        'COPY ["_fi/uv/${TARGETARCH}/uv", "/uv"]',
        "FROM ghcr.io/flyteorg/flyte:py3.12-v2.12.1",
    ]
    assert "USER root" in lines and lines[-1] == "USER flyte"
    assert "flyte==" not in "".join(lines) and "useradd" not in "".join(lines)  # only the user's layers
    # As in the SDK, a name or a registry makes an image of its own, built FROM the published one.
    named = Image.from_debian_base(python_version=(3, 12), name="mine")
    assert not named.is_reference and named.uri.startswith("mine:")


def test_the_built_base_has_flytes_user_layout() -> None:
    image = BASE.with_source_folder(Path(__file__).parent / "snapshots", dst="/srv")
    text = plan(image).dockerfile
    for expected in (
        "useradd --create-home --shell /bin/bash flyte",
        "chown -R flyte:flyte /home/flyte /root",
        "WORKDIR /home/flyte",
        "PYTHONPATH=/root",
        "PATH=/opt/venv/bin:$PATH",
        "apt-get install -y -q --no-install-recommends build-essential ca-certificates",
        'COPY --chown=flyte:flyte ["_fi/1/", "/srv/"]',
    ):
        assert expected in text, expected
    assert text.splitlines()[-1] == "USER flyte"
    assert "flyte==" not in text
    # An unreleased flyte has no published image: the base is built and that flyte installed.
    dev = plan(Image.from_debian_base(python_version=(3, 11), flyte_version="2.13.0.dev3")).dockerfile
    assert "useradd" in dev and "uv pip install flyte==2.13.0.dev3" in dev


def test_cli_dockerfile_shows_the_flyte_user_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images.py").write_text(
        "from flyte_images import Image\nbase = Image.from_debian_base(python_version=(3, 11), install_flyte=False)\n"
    )
    assert main(["dockerfile", f"{tmp_path / 'images.py'}:base"]) == 0
    out = capsys.readouterr().out
    assert "useradd --create-home --shell /bin/bash flyte" in out and "WORKDIR /home/flyte" in out
    assert out.rstrip().endswith("USER flyte")


# ----- 3. uv projects without uv.lock, and install_project with a strict .dockerignore ---------


def test_a_uv_project_without_a_lock_resolves_at_build_time(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\ndependencies = ["six"]\n')
    image = BASE.with_uv_project(tmp_path / "pyproject.toml")
    before = image.identifier  # no uv.lock is needed
    text = plan(image).dockerfile
    assert "cd /tmp/flyte-images/1 && uv lock && uv export --frozen" in text
    assert "target=/tmp/flyte-images/1,rw" in text  # the lock is written into the step's own mount
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\ndependencies = ["idna"]\n')
    assert image.identifier != before  # the identifier covers pyproject.toml
    (tmp_path / "uv.lock").write_text("version = 1\n")
    assert "uv lock" not in plan(image).dockerfile  # a lock beside it is used once it exists


def test_install_project_keeps_pyproject_and_lock_whatever_the_dockerignore(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\n')
    (tmp_path / "uv.lock").write_text("version = 1\n")
    (tmp_path / "p.py").write_text("")
    (tmp_path / ".dockerignore").write_text("*.toml\n*.lock\n")
    image = BASE.with_uv_project(tmp_path / "pyproject.toml", project_install_mode="install_project")
    assert {"_fi/1p/pyproject.toml", "_fi/1p/uv.lock", "_fi/1p/p.py"} <= _dests(image)


# ----- 4. with_local_v2 forces the local wheel -------------------------------------------------


def test_local_v2_forces_the_local_wheel_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "flyte-0.0.1.dev0-py3-none-any.whl").write_bytes(b"wheel")
    monkeypatch.chdir(tmp_path)
    steps = [line for line in plan(BASE.with_local_v2()).dockerfile.splitlines() if "uv pip install" in line]
    assert steps[-2].endswith('"uv pip install --find-links /tmp/flyte-images/1 flyte"]')
    assert steps[-1].endswith(
        '"uv pip install --find-links /tmp/flyte-images/1 --no-deps --no-index --reinstall flyte"]'
    )


# ----- 5. the project's .dockerignore ------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    for rel in ("src/app.py", "src/notes.log", "src/.git/HEAD", "src/.venv/bin/python", "src/keep.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / ".dockerignore").write_text("**/*.log\n")
    monkeypatch.chdir(root)
    return root


def _copied(image: Image) -> set[str]:
    """What the image's last layer (a source folder `src`) copies."""
    prefix = f"_fi/{len(image._layers) - 1}/src/"
    return {d.removeprefix(prefix) for d in _dests(image) if d.startswith(prefix)}


def test_the_project_roots_dockerignore_applies_to_every_copied_folder(repo: Path, tmp_path: Path) -> None:
    image = BASE.with_source_folder(repo / "src")
    assert _copied(image) == {"app.py", "keep.txt"}  # the current folder's .dockerignore
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".dockerignore").write_text("keep.txt\n")
    flyte_images.init(root_dir=elsewhere)  # the SDK's root_dir decides whose .dockerignore it is
    assert _copied(image) == {"app.py", "notes.log"}
    flyte_images.init(root_dir=repo)
    assert _copied(image) == {"app.py", "keep.txt"}


def test_with_dockerignore_wins_and_default_excludes_belong_to_the_copied_folder(repo: Path) -> None:
    (repo / "other.dockerignore").write_text("src/keep.txt\n")  # relative to its own folder
    own = BASE.with_dockerignore(repo / "other.dockerignore").with_source_folder(repo / "src")
    assert _copied(own) == {"app.py", "notes.log"}
    at_root = BASE.with_dockerignore(Path(".dockerignore")).with_source_folder(Path("src"))
    assert _copied(at_root) == {"app.py", "keep.txt"}  # src/.git and src/.venv stay out


# ----- 6. shapes and errors Flyte code touches -------------------------------------------------


def test_image_build_constructs_as_in_flyte() -> None:
    result = ImageBuild(uri="registry/app:1", remote_run=None)
    assert result == "registry/app:1" and result.uri == "registry/app:1"
    assert result.remote_run is None and result.build_run is None and result.built is False
    ours = ImageBuild("r/a:2", built=True, digest="sha256:1")
    assert (ours.uri, ours.built, ours.digest, ours.reason) == ("r/a:2", True, "sha256:1", "")
    import copy
    import pickle

    for clone in (copy.copy(ours), pickle.loads(pickle.dumps(ours))):
        assert clone == ours and clone.built is True and clone.digest == "sha256:1"


def test_image_cache_transport_is_a_property_with_the_sdks_fields() -> None:
    cache = ImageCache(image_lookup={"env": "r/a:1"})
    transport = cache.to_transport
    assert isinstance(transport, str) and cache.build_run_ids == {} and cache.serialized_form is None
    read = ImageCache.from_transport(transport)
    assert read == cache and read.serialized_form == transport and read.to_transport == transport


def test_flyte_errors_are_importable_and_missing_sources_are_image_build_errors(tmp_path: Path) -> None:
    from flyte_images.errors import ImageBuildError, SourceNotFoundError

    with pytest.raises(ImageBuildError, match="missing"):
        BASE.with_source_folder(tmp_path / "missing").validate()
    with pytest.raises(SourceNotFoundError):
        BASE.with_source_file(tmp_path / "missing.txt").validate()
    (tmp_path / "file.txt").write_text("")
    with pytest.raises(ImageBuildError, match="not a folder"):
        BASE.with_source_folder(tmp_path / "file.txt").validate()
    assert issubclass(ImageBuildError, RuntimeError) and issubclass(flyte_images.BuildError, ImageBuildError)


def test_wrong_argument_types_are_type_errors_and_tuples_are_accepted() -> None:
    with pytest.raises(TypeError, match=r"separate arguments"):
        BASE.with_apt_packages(["vim", "git"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        BASE.with_pip_packages(["a", "b"])  # type: ignore[arg-type]
    with pytest.raises(flyte_images.InvalidLayerArgument):  # still one, for existing handlers
        BASE.with_env_vars([("A", "1")])  # type: ignore[arg-type]
    layer = BASE.with_pip_packages(("a", "b"))._layers[-1]  # type: ignore[arg-type]
    assert getattr(layer, "packages", None) == ("a", "b")


# ----- 7. registry and repository names ----------------------------------------------------------


def test_a_registry_may_be_a_namespace_as_the_reference_grammar_allows() -> None:
    image = BASE.clone(registry="other_registry", name="myclone")
    assert image.uri == f"other_registry/myclone:{image.identifier}"
    for ok in ("localhost:5000", "[::1]:5000/team", "Registry.Example:443/a/b", "a__b/c-d"):
        assert BASE.clone(registry=ok).registry == ok
    for bad in ("-bad.example", "ghcr.io/Upper", "other_registry:5000", "a..b/c"):
        with pytest.raises(flyte_images.InvalidLayerArgument, match="registry"):
            BASE.clone(registry=bad)


# ----- 8. flyte's environment variable names --------------------------------------------------


def test_flytes_environment_variables_are_honoured_and_ours_win(monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte_images import _config

    monkeypatch.delenv("FLYTE_IMAGE_REGISTRY", raising=False)
    image = BASE.with_env_vars({"A": "1"})
    monkeypatch.setenv("FLYTE_IMAGE_REGISTRY", "flyte.example/team")
    assert image.uri.startswith("flyte.example/team/flyte:")
    monkeypatch.setenv("FLYTE_IMAGES_REGISTRY", "ours.example")
    assert image.uri.startswith("ours.example/flyte:")
    monkeypatch.setenv("FLYTE_IMAGE_BUILDER", "local")
    assert _config.configured_builder() == "local"
    monkeypatch.setenv("FLYTE_IMAGES_BUILDER", "docker")
    assert _config.configured_builder() == "docker"


def test_build_images_resolves_code_bundles_by_copy_style(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "app.py").write_text("print('code')\n")
    monkeypatch.chdir(tmp_path)
    image = BASE.with_code_bundle(copy_style="all", dst="/app")
    env = flyte_images.TaskEnvironment("coded", image=image)
    bundled = flyte_images.build_images(env, dry_run=True, copy_style="none").reasons["coded"]
    travels = flyte_images.build_images(env, dry_run=True).reasons["coded"]
    without = flyte_images.build_images(flyte_images.TaskEnvironment("plain", image=BASE), dry_run=True)
    assert bundled != travels  # with "none" the code is in the image, so it has another tag
    assert travels.split()[2] == without.reasons["plain"].split()[2]  # otherwise the layer copies nothing


def test_clone_with_a_layer_needs_an_extendable_image_as_in_flyte() -> None:
    from flyte_images import LayerNotAllowedError
    from flyte_images._image.layers import Env

    base = Image.from_base("python:3.12-slim").clone(name="app")
    with pytest.raises(LayerNotAllowedError, match="extendable=True"):
        base.clone(addl_layer=Env(env_vars=(("A", "1"),)))
    assert isinstance(base.clone(extendable=True).clone(addl_layer=Env(env_vars=(("A", "1"),))), Image)
    assert BASE.clone(addl_layer=Env(env_vars=(("A", "1"),)))  # from_debian_base images are extendable
    assert base.with_env_vars({"A": "1"})  # the with_* methods stay open, as documented
