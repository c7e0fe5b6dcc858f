"""What users see of the Image model: immutability, constructors' rules, clear errors at the call."""

from __future__ import annotations

from pathlib import Path

import pytest

import flyte_images
from flyte_images import (
    ConfigError,
    Image,
    InvalidImageError,
    InvalidLayerArgument,
    LayerNotAllowedError,
    MissingNameError,
    Secret,
    SourceError,
    SourceNotFoundError,
)
from flyte_images._image.layers import SourceFolder, UVProject
from flyte_images._plan.plan import plan

BASE = Image.from_debian_base(python_version=(3, 12), install_flyte=False)


def test_direct_construction_is_refused_with_the_way_to_do_it() -> None:
    with pytest.raises(TypeError, match="from_debian_base"):
        Image(base_image="python:3.12")


def test_with_returns_a_new_image_and_leaves_the_old_one_unchanged() -> None:
    layers_before = BASE._layers
    derived = BASE.with_apt_packages("git")
    assert derived is not BASE
    assert BASE._layers == layers_before
    assert len(derived._layers) == len(layers_before) + 1
    with pytest.raises(AttributeError):
        BASE.name = "x"  # type: ignore[misc]


def test_images_compare_and_hash_by_value() -> None:
    one = BASE.with_pip_packages("numpy").with_env_vars({"A": "1"})
    two = BASE.with_pip_packages("numpy").with_env_vars({"A": "1"})
    assert one == two and hash(one) == hash(two)
    assert len({one, two}) == 1


def test_from_base_is_a_reference_until_changed() -> None:
    ref = Image.from_base("ghcr.io/acme/base:1.0")
    assert ref.is_reference
    assert ref.uri == "ghcr.io/acme/base:1.0"
    built = ref.clone(name="app", registry="localhost:5000")
    assert not built.is_reference
    assert built.uri == f"localhost:5000/app:{built.identifier}"


def test_layers_on_a_nameless_base_need_a_name_for_the_uri_only() -> None:
    image = Image.from_base("python:3.12-slim").with_pip_packages("numpy")  # defining it works
    with pytest.raises(MissingNameError, match=r"clone\(name="):
        _ = image.uri
    assert image.clone(name="app").uri.startswith("app:")


def test_registry_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    image = BASE.with_apt_packages("git")
    assert image.uri == f"flyte:{image.identifier}"
    monkeypatch.setenv("FLYTE_IMAGES_REGISTRY", "registry.example:5000/team")
    assert image.uri == f"registry.example:5000/team/flyte:{image.identifier}"
    assert image.clone(registry="ghcr.io/me").uri.startswith("ghcr.io/me/flyte:")


def test_dockerfile_images_take_no_layers(tmp_path: Path) -> None:
    image = Image.from_dockerfile(tmp_path / "Dockerfile", registry="r", name="n")  # missing file: fine
    with pytest.raises(LayerNotAllowedError, match="Dockerfile"):
        image.with_apt_packages("git")
    with pytest.raises(SourceNotFoundError, match="Dockerfile"):
        image.validate()


def test_from_ref_name_resolves_through_settings_and_names_known_refs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = Image.from_ref_name("trainer")
    with pytest.raises(ConfigError, match=r"trainer.*FLYTE_IMAGES_REF_TRAINER"):
        _ = image.uri
    monkeypatch.setenv("FLYTE_IMAGES_REF_TRAINER", "ghcr.io/acme/trainer:7")
    assert image.uri == "ghcr.io/acme/trainer:7"
    extended = image.with_pip_packages("numpy")
    assert extended.uri.startswith("trainer:")


@pytest.mark.parametrize("version", [(3, 12), "3.12", [3, 12]])
def test_python_version_forms(version: object) -> None:
    image = Image.from_debian_base(python_version=version, install_flyte=False)  # type: ignore[arg-type]
    assert image.python_version == (3, 12)
    assert image.base_image == "python:3.12-slim-bookworm"


@pytest.mark.parametrize("version", ["3", "three.twelve", (2, 7), (3,), "3.12.1", (3, True), 3.12])
def test_nonsense_python_versions_are_refused(version: object) -> None:
    with pytest.raises(InvalidLayerArgument, match="python_version"):
        Image.from_debian_base(python_version=version)  # type: ignore[arg-type]


def test_base_image_is_configurable_for_mirrors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_BASE_IMAGE", "mirror.local/python:{python_version}-slim")
    image = Image.from_debian_base(python_version=(3, 11), install_flyte=False)
    assert image.base_image == "mirror.local/python:3.11-slim"


@pytest.mark.parametrize(
    ("call", "parameter"),
    [
        (lambda: BASE.with_apt_packages("git\nRUN rm -rf /"), "packages"),
        (lambda: BASE.with_apt_packages("git; rm -rf /"), "packages"),
        (BASE.with_apt_packages, "packages"),
        (lambda: BASE.with_pip_packages("numpy\nRUN id"), "packages"),
        (lambda: BASE.with_pip_packages("--index-url=http://x"), "packages"),
        (lambda: BASE.with_env_vars({"A=B": "1"}), "env_vars"),
        (lambda: BASE.with_env_vars({"A B": "1"}), "env_vars"),
        (lambda: BASE.with_env_vars({"A": "1\nRUN id"}), "env_vars"),
        (lambda: BASE.with_env_vars({}), "env_vars"),
        (lambda: BASE.clone(platform="linux/amd65"), "platform"),  # type: ignore[arg-type]
        (lambda: BASE.with_workdir("/app\nRUN id"), "workdir"),
        (lambda: BASE.with_commands(["echo\x00"]), "commands"),
        (lambda: BASE.with_commands([]), "commands"),
        (lambda: BASE.with_requirements("requirements.in"), "file"),
        (lambda: BASE.with_pip_packages("x", index_url="not a url"), "index_url"),
        (lambda: BASE.with_pip_packages("x", index_url="ftp://host/simple"), "index_url"),
        (lambda: BASE.with_uv_project("pyproject.toml", project_install_mode="all"), "project_install_mode"),
        (lambda: BASE.with_source_file([Path("a/x.py"), Path("b/x.py")]), "src"),
        (lambda: BASE.with_pip_packages("x", secret_mounts=Secret("bad key")), "Secret.key"),
        (lambda: Secret("k", mount=Path("relative/path")), "Secret.mount"),
        (lambda: Secret("k", as_env_var="NOT-VALID"), "Secret.as_env_var"),
        (lambda: Image.from_base("python:3.12 slim"), "image_uri"),
        (lambda: BASE.clone(name="MyApp"), "name"),
        (lambda: BASE.clone(name="my app"), "name"),
        (lambda: Image.from_debian_base(name="ml//trainer"), "name"),
        (lambda: BASE.clone(registry="https://ghcr.io/acme"), "registry"),
        (lambda: BASE.clone(registry="ghcr.io/Acme"), "registry"),
    ],
)
def test_bad_arguments_fail_at_the_call_naming_the_parameter(call: object, parameter: str) -> None:
    with pytest.raises(InvalidLayerArgument) as info:
        call()  # type: ignore[operator]
    assert info.value.parameter == parameter
    assert isinstance(info.value, ValueError) and isinstance(info.value, InvalidImageError)


def test_lists_are_accepted_where_tuples_are_stored() -> None:
    image = BASE.with_pip_packages("x", extra_index_urls=["https://a.example/simple"])
    layer = image._layers[-1]
    assert layer.extra_index_urls == ("https://a.example/simple",)  # type: ignore[attr-defined]
    one_str = BASE.with_uv_project("pyproject.toml", extra_index_urls="https://b.example/simple")  # type: ignore[arg-type]
    assert one_str._layers[-1].extra_index_urls == ("https://b.example/simple",)  # type: ignore[attr-defined]


def test_secret_mounts_accept_str_secret_and_lists() -> None:
    image = BASE.with_apt_packages("git", secret_mounts=["a", Secret("b", group="g"), "a"])
    secrets = image._layers[-1].secret_mounts  # type: ignore[attr-defined]
    assert [s.key for s in secrets] == ["a", "b"]
    assert secrets[1].source_env_var == "G_B"
    assert Secret("hf-token").source_env_var == "HF_TOKEN"


def test_source_folder_destination_rules(tmp_path: Path) -> None:
    layer = BASE.with_source_folder(tmp_path / "src")._layers[-1]
    assert isinstance(layer, SourceFolder) and layer.target_name == "src" and layer.dst == "."
    contents = BASE.with_source_folder(tmp_path / "src", "/app", copy_contents_only=True)._layers[-1]
    assert isinstance(contents, SourceFolder) and contents.target_name is None


def test_uv_project_uses_the_sibling_lock_and_relative_paths_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    image = BASE.with_uv_project("proj/pyproject.toml")
    layer = image._layers[-1]
    assert isinstance(layer, UVProject)
    assert layer.uvlock is None  # the sibling uv.lock is looked for when the image is planned
    assert layer.pyproject.is_absolute()
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "pyproject.toml").write_text("[project]\nname='x'\n")
    (tmp_path / "proj" / "uv.lock").write_text("version = 1\n")
    monkeypatch.chdir(tmp_path / "proj")  # the paths were made absolute at the call
    assert "_fi/1/uv.lock" in {s.dest for s in plan(image).manifest}


def test_validate_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    image = BASE.with_uv_project(tmp_path / "pyproject.toml", uvlock=tmp_path / "uv.lock")
    with pytest.raises(SourceNotFoundError, match=r"uv\.lock"):
        image.validate()
    (tmp_path / "uv.lock").write_text("version = 1\n")
    image.validate()


def test_uv_script_header_is_checked_by_validate(tmp_path: Path) -> None:
    script = tmp_path / "tool.py"
    script.write_text("print('no header')\n")
    image = Image.from_uv_script(script, name="tool")
    with pytest.raises(SourceError, match="# /// script"):
        image.validate()


def test_with_local_v2_installs_the_wheels_of_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    image = BASE.with_local_v2()
    with pytest.raises(SourceNotFoundError, match="dist"):
        image.validate()
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "flyte-9.9.9-py3-none-any.whl").write_bytes(b"wheel v1")
    before = image.identifier
    (tmp_path / "dist" / "flyte-9.9.9-py3-none-any.whl").write_bytes(b"wheel v2")
    assert image.identifier != before


def test_public_surface_is_small_and_importable() -> None:
    for name in flyte_images.__all__:
        assert hasattr(flyte_images, name), name
    assert flyte_images.version() == flyte_images.__version__
