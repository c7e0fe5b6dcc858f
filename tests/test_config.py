"""Settings: init(...), environment variables and the TOML config file, in that order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import flyte_images
from flyte_images import ConfigError, Image

BASE = Image.from_debian_base(python_version=(3, 11), install_flyte=False)


def test_init_sets_registry_and_named_images() -> None:
    flyte_images.init(image_registry="ghcr.io/acme", images={"trainer": "ghcr.io/acme/trainer:9"})
    image = BASE.with_apt_packages("git")
    assert image.uri == f"ghcr.io/acme/flyte:{image.identifier}"
    assert Image.from_ref_name("trainer").uri == "ghcr.io/acme/trainer:9"


def test_config_file_found_in_a_parent_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flyte-images.toml").write_text(
        'registry = "registry.example:5000/team"\n'
        'base_image = "mirror.example/python:{python_version}-slim"\n'
        "[images]\ndefault = 'ghcr.io/acme/base:1'\n"
    )
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub" / "deeper")
    image = Image.from_debian_base(python_version=(3, 11), install_flyte=False).with_apt_packages("git")
    assert image.base_image == "mirror.example/python:3.11-slim"
    assert image.uri.startswith("registry.example:5000/team/flyte:")
    assert Image.from_ref_name().uri == "ghcr.io/acme/base:1"


def test_pyproject_table_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.flyte-images]\nregistry = "from-file"\n')
    monkeypatch.chdir(tmp_path)
    image = BASE.with_apt_packages("git")
    assert image.uri.startswith("from-file/")
    monkeypatch.setenv("FLYTE_IMAGES_REGISTRY", "from-env")
    assert image.uri.startswith("from-env/")
    flyte_images.init(image_registry="from-init")
    assert image.uri.startswith("from-init/")


def test_explicit_file_env_var_and_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    user = Path(str(tmp_path / "xdg"))
    (user / "flyte-images").mkdir(parents=True)
    (user / "flyte-images" / "config.toml").write_text('registry = "from-user-config"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(user))
    image = BASE.with_apt_packages("git")
    assert image.uri.startswith("from-user-config/")
    other = tmp_path / "other.toml"
    other.write_text('registry = "from-env-file"\n')
    monkeypatch.setenv("FLYTE_IMAGES_CONFIG", str(other))
    flyte_images._config.reset()
    assert image.uri.startswith("from-env-file/")
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('registry = "from-explicit"\n')
    asyncio.run(flyte_images.init_from_config.aio(explicit, images=("gpu=ghcr.io/acme/gpu:3",)))
    assert image.uri.startswith("from-explicit/")
    assert Image.from_ref_name("gpu").uri == "ghcr.io/acme/gpu:3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('registri = "x"\n', r"unknown settings \['registri'\]"),
        ("registry = 5\n", "registry must be a string"),
        ("registry = \n", "cannot read config file"),
        ("[images]\na = 1\n", r"\[images\] must map names"),
    ],
)
def test_bad_config_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "flyte-images.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        flyte_images.init_from_config(path)
    assert str(path) in str(info.value)


def test_a_pyproject_whose_settings_are_not_a_table_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found (it mentions [tool.flyte-images]), but its settings are a number.
    (tmp_path / "pyproject.toml").write_text('# [tool.flyte-images]\n[project]\nname = "x"\n[tool]\nflyte-images = 5\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"\[tool\.flyte-images\] must be a table of settings") as info:
        _ = BASE.with_apt_packages("git").uri
    assert str(tmp_path / "pyproject.toml") in str(info.value)


def test_a_pyproject_whose_tool_is_not_a_table_has_no_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found (it mentions [tool.flyte-images]), but holds no such table: the defaults apply.
    (tmp_path / "pyproject.toml").write_text('tool = "x"\n# [tool.flyte-images]\n[project]\nname = "x"\n')
    monkeypatch.chdir(tmp_path)
    assert BASE.with_apt_packages("git").uri.startswith("flyte:")


def test_bad_image_pairs_and_missing_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="name=registry/repo:tag"):
        flyte_images.init_from_config(images=("=ghcr.io/acme/nameless:1",))
    with pytest.raises(ConfigError, match="does not exist"):
        flyte_images.init_from_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="images must map"):
        flyte_images.init(images={"a": 1})  # type: ignore[dict-item]


def test_a_bad_registry_from_the_environment_or_file_names_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = BASE.with_apt_packages("git")
    monkeypatch.setenv("FLYTE_IMAGES_REGISTRY", "https://ghcr.io/acme")
    with pytest.raises(ConfigError, match=r"FLYTE_IMAGES_REGISTRY is not usable: registry: .*without a scheme"):
        _ = image.uri
    monkeypatch.delenv("FLYTE_IMAGES_REGISTRY")
    (tmp_path / "flyte-images.toml").write_text('registry = "Ghcr.io/Acme Team"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"flyte-images\.toml is not usable"):
        _ = image.uri


def test_a_bare_uri_in_images_is_the_default_image(tmp_path: Path) -> None:
    import flyte_images

    (tmp_path / "flyte-images.toml").write_text("")
    flyte_images.init_from_config(
        tmp_path / "flyte-images.toml", images=("ghcr.io/acme/base:7", "gpu=ghcr.io/acme/gpu:3")
    )
    assert flyte_images.Image.from_ref_name().uri == "ghcr.io/acme/base:7"
    assert flyte_images.Image.from_ref_name("gpu").uri == "ghcr.io/acme/gpu:3"
