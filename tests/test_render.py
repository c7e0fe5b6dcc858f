"""Rendered Dockerfiles for every layer kind and their combinations, compared with snapshots.

Snapshots live in tests/snapshots/; after a deliberate rendering change, regenerate them with
UPDATE_SNAPSHOTS=1 and bump RENDERER_REVISION (it is part of every tag).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from flyte_images import Image, LayerNotAllowedError, Secret
from flyte_images._formats.dockerfile import RenderOptions, is_heavy
from flyte_images._image.identity import RENDERER_REVISION
from flyte_images._image.image import resolve_code_bundle_layer
from flyte_images._plan.plan import plan as render

SNAPSHOTS = Path(__file__).parent / "snapshots"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "__init__.py").write_text("")
    (root / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0.1.0"\n')
    (root / "uv.lock").write_text("version = 1\n")
    (root / "poetry.lock").write_text("# poetry lock\n")
    (root / "requirements.txt").write_text("-r base.txt\nsix==1.16.0\n")
    (root / "base.txt").write_text("idna==3.7\n")
    (root / "tool.py").write_text('# /// script\n# dependencies = ["six==1.16.0", "idna"]\n# ///\nprint(1)\n')
    (root / "config.yaml").write_text("a: 1\n")
    (root / "dist").mkdir()
    (root / "dist" / "flyte-0.0.1-py3-none-any.whl").write_bytes(b"wheel")
    (root / "nolock").mkdir()
    (root / "nolock" / "pyproject.toml").write_text('[project]\nname = "nolock"\nversion = "0.1.0"\n')
    (root / "pixiproj").mkdir()
    (root / "pixiproj" / "pixi.toml").write_text('[workspace]\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n')
    (root / "pixiproj" / "pixi.lock").write_text("version: 6\n")
    (root / "pixi_tool.py").write_text(
        '# /// script\n# requires-python = ">=3.12"\n# dependencies = ["flyte==2.12.1"]\n#\n'
        '# [tool.pixi.dependencies]\n# gdal = "*"\n# ///\nprint(1)\n'
    )
    return root


def base(**kw: object) -> Image:
    return Image.from_debian_base(python_version=(3, 11), install_flyte=False, **kw)  # type: ignore[arg-type]


CASES: dict[str, Callable[[Path], Image]] = {
    "debian_base": lambda p: base(),
    "debian_base_with_flyte": lambda p: Image.from_debian_base(python_version=(3, 12)).with_pip_packages("six"),
    "debian_base_flyte_unreleased": lambda p: Image.from_debian_base(
        python_version=(3, 12), flyte_version="2.13.0.dev3"
    ),
    "apt": lambda p: base().with_apt_packages("git", "curl"),
    "pip": lambda p: base().with_pip_packages(
        "numpy==2.1.0", "pandas>=2", index_url="https://mirror.example/simple",
        extra_index_urls=["https://extra.example/simple"], pre=True, extra_args="--no-build-isolation",
    ),
    "pip_heavy_split": lambda p: base().with_pip_packages("torch==2.3.0", "nvidia-cudnn-cu12", "requests"),
    "requirements": lambda p: base().with_requirements(p / "requirements.txt"),
    "uv_project": lambda p: base().with_uv_project(p / "pyproject.toml", extra_args="--no-dev"),
    "uv_project_install": lambda p: base().with_uv_project(
        p / "pyproject.toml", project_install_mode="install_project"
    ),
    "uv_project_no_lock": lambda p: base().with_uv_project(
        p / "nolock" / "pyproject.toml", index_url="https://mirror.example/simple", extra_args="--no-dev"
    ),
    "pixi_project": lambda p: base().with_pixi_project(p / "pixiproj" / "pixi.toml", environment="gpu"),
    "pixi_project_install": lambda p: base()
    .with_pixi_project(p / "pixiproj", extra_args="--frozen", project_install_mode="install_project",
                       secret_mounts=["CHANNEL_TOKEN"])
    .with_pip_packages("six"),
    "pixi_script": lambda p: Image.from_pixi_script(p / "pixi_tool.py", name="tool"),
    "code_bundle_all": lambda p: resolve_code_bundle_layer(
        base().with_code_bundle(copy_style="all", dst="/app"), "none", p / "src"
    ),
    "code_bundle_unresolved": lambda p: base().with_code_bundle(),
    "poetry_project": lambda p: base().with_poetry_project(p / "pyproject.toml", extra_args="--only main"),
    "poetry_project_install": lambda p: base().with_poetry_project(
        p / "pyproject.toml", project_install_mode="install_project"
    ),
    "uv_script": lambda p: Image.from_uv_script(p / "tool.py", name="tool", python_version=(3, 11)),
    "source_file": lambda p: base().with_source_file(p / "config.yaml", dst="/etc/app"),
    "source_folder": lambda p: base().with_source_folder(p / "src"),
    "source_folder_contents": lambda p: base().with_source_folder(p / "src", "/app", copy_contents_only=True),
    "env": lambda p: base().with_env_vars({"B": "two words", "A": 'q"$HOME\\'}),
    "workdir": lambda p: base().with_workdir("/srv/my app"),
    "commands": lambda p: base().with_commands(["echo one", "printf 'a\\nb' > /f\necho two"]),
    "secrets": lambda p: base()
    .with_pip_packages("private-pkg", secret_mounts=[Secret("pip-token", as_env_var="PIP_TOKEN")])
    .with_apt_packages("git", secret_mounts=Secret("apt-auth", group="corp", mount=Path("/etc/apt/auth.conf")))
    .with_commands(["test -n \"$GITHUB_PAT\""], secret_mounts="GITHUB_PAT"),
    "local_v2": lambda p: base().with_local_v2(),
    "from_base_system_python": lambda p: Image.from_base("python:3.11-slim-bookworm")
    .clone(name="app")
    .with_apt_packages("jq")
    .with_pip_packages("six"),
    "combined": lambda p: base()
    .with_apt_packages("git")
    .with_uv_project(p / "pyproject.toml")
    .with_source_folder(p / "src")
    .with_env_vars({"A": "1"})
    .with_workdir("/root/src")
    .with_commands(["python -c 'import pkg'"]),
}  # fmt: skip


def check_snapshot(name: str, text: str) -> None:
    """Compare with the snapshot made for this RENDERER_REVISION.

    A missing snapshot fails. UPDATE_SNAPSHOTS=1 rewrites a changed one only together with a
    revision bump: a new rendering is a new image for every user (see _identity)."""
    path = SNAPSHOTS / f"{name}.Dockerfile"
    made_for = int((SNAPSHOTS / "REVISION").read_text())
    if os.environ.get("UPDATE_SNAPSHOTS") and (not path.exists() or path.read_text() != text):
        if made_for == RENDERER_REVISION and path.exists():
            pytest.fail(f"rendering of {name} changed: bump RENDERER_REVISION in _identity.py, then update")
        path.write_text(text)
        (SNAPSHOTS / "REVISION").write_text(f"{RENDERER_REVISION}\n")
        return
    assert path.exists(), f"snapshot {path.name} is missing; write it with UPDATE_SNAPSHOTS=1 (and a revision bump)"
    assert made_for == RENDERER_REVISION, "the snapshots were made for another RENDERER_REVISION"
    assert text == path.read_text(), f"rendering of {name} changed; see {path} and bump RENDERER_REVISION"


@pytest.mark.parametrize("name", sorted(CASES))
def test_rendering_matches_snapshot(name: str, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    rendered = render(CASES[name](project))
    check_snapshot(name, rendered.dockerfile)


def test_ca_bundle_rendering_matches_snapshot(project: Path) -> None:
    image = base().with_apt_packages("curl").with_pip_packages("six").with_commands(["curl -fsS https://x"])
    check_snapshot("ca_bundle", render(image, RenderOptions(ca_bundle=True)).dockerfile)


def test_rendering_twice_gives_the_same_bytes(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    for make in CASES.values():
        assert render(make(project)).dockerfile == render(make(project)).dockerfile


def test_each_layer_renders_to_its_own_instructions(project: Path) -> None:
    image = base()
    before = render(image).dockerfile.count("\n")
    after = render(image.with_env_vars({"A": "1"})).dockerfile
    # Before the `USER flyte` the Debian base ends with: the layers' steps run as root.
    assert after.count("\n") == before + 1 and after.endswith('ENV A="1"\nUSER flyte\n')


def test_context_plan_lists_only_referenced_files(project: Path) -> None:
    image = base().with_requirements(project / "requirements.txt").with_source_folder(project / "src")
    planned = render(image)
    dests = sorted(staged.dest for staged in planned.manifest)
    assert dests == [
        "_fi/1/base.txt",
        "_fi/1/requirements.txt",
        "_fi/2/src/pkg",
        "_fi/2/src/pkg/__init__.py",
        "_fi/uv/amd64/uv",
    ]


def test_secrets_are_declared_but_no_value_is_rendered(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_TOKEN", "s3cr3t-value")
    monkeypatch.chdir(project)
    rendered = render(CASES["secrets"](project))
    assert [s.key for s in rendered.secrets] == ["pip-token", "apt-auth", "GITHUB_PAT"]
    assert "s3cr3t-value" not in rendered.dockerfile


def test_reference_images_have_nothing_to_render() -> None:
    with pytest.raises(LayerNotAllowedError, match="used as is"):
        render(Image.from_base("python:3.11"))


@pytest.mark.parametrize(
    ("requirement", "heavy"),
    [
        ("torch", True), ("torch==2.3.0", True), ("Torch>=2", True), ("nvidia-cublas-cu12", True),
        ("jax[cuda12]", True), ("tensorflow-cpu~=2.16", True), ("flash_attn", True),
        ("torchmetrics", False), ("requests", False), ("numpy", False),
        ("mypkg @ https://example.com/torch.whl", False), ("git+https://github.com/pytorch/pytorch", False),
    ],
)  # fmt: skip
def test_heavy_package_rule(requirement: str, heavy: bool) -> None:
    assert is_heavy(requirement) is heavy


def test_heavy_packages_get_an_earlier_step_so_light_changes_keep_them_cached() -> None:
    one = render(base().with_pip_packages("torch==2.3.0", "requests==2.31.0")).dockerfile
    two = render(base().with_pip_packages("torch==2.3.0", "requests==2.32.0")).dockerfile
    torch_step = [line for line in one.splitlines() if "torch==2.3.0" in line]
    assert len(torch_step) == 1 and "requests" not in torch_step[0]
    # The torch step, and everything before it, renders identically: BuildKit reuses it.
    prefix_one = one[: one.index(torch_step[0]) + len(torch_step[0])]
    assert two.startswith(prefix_one)
