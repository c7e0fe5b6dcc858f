"""The flyte plugin on the real engine: `flyte.init(image_builder="flyte-images")`, then
`flyte.build(image)` of a real flyte.Image, pushed to a loopback registry and run with docker.

One image on flyte's `from_debian_base(install_flyte=False)` with every common layer (apt, pip, uv
project, requirements, env, workdir, commands with an environment secret and a mounted one, a
source folder and file) is built once for the module; the tests then look inside it (flyte's
layout: the `flyte` user, /opt/venv), build it again (which must not build), and ask about it
while its registry is down (which must be "cannot tell", never "exists"). One more image is built
on flyte's published default image, which cannot be pulled here: fixtures/engine/flyte-standin.sh
makes a local stand-in of it when it is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import flyte
import flyte._initialize as flyte_init
import httpx
import pytest
from engine_support import docker, registry, remove_image, run_in
from flyte import _image as fl
from flyte._internal.imagebuild.image_builder import ImageBuildEngine
from flyte.config._reader import get_config_file

from flyte_images import RegistryError, from_flyte
from flyte_images._flyte import plugin

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]
PROJECTS = Path(__file__).resolve().parent.parent / "fixtures" / "projects"
STANDIN = "ghcr.io/flyteorg/flyte:py3.11-v2.12.1"
STANDIN_SCRIPT = Path(__file__).resolve().parent.parent / "fixtures" / "engine" / "flyte-standin.sh"
TOKEN = "flyte-plugin-token-value"
FILE_SECRET = "flyte-plugin-file-secret"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass(frozen=True)
class Built:
    image: fl.Image
    uri: str
    host: str


def flyte_image(host: str, name: str, folder: Path) -> fl.Image:
    src = folder / "pkg"
    src.mkdir(parents=True, exist_ok=True)
    (src / "hello.py").write_text("print('hello from pkg')\n")
    (folder / "settings.toml").write_text("x = 1\n")
    return (
        flyte.Image.from_debian_base(
            python_version=(3, 11), install_flyte=False, registry=host, name=name, platform=("linux/amd64",)
        )
        .with_apt_packages("jq")
        .with_pip_packages("six==1.16.0")
        .with_uv_project(PROJECTS / "uvproj" / "pyproject.toml", project_install_mode="install_project")
        .with_requirements(PROJECTS / "reqs" / "requirements.txt")
        .with_env_vars({"GREETING": "hello from flyte"})
        .with_workdir("/app")
        .with_source_folder(src)
        .with_source_file(folder / "settings.toml", dst="/etc/app/")
        .with_commands(
            ['test -n "$FI_FLYTE_TOKEN" && echo "${#FI_FLYTE_TOKEN}" > /app/token-length'],
            secret_mounts=[flyte.Secret(key="fi_flyte_token")],
        )
        .with_commands(
            ["wc -c < /etc/flyte/secrets > /app/mounted-length"],
            secret_mounts=[flyte.Secret(key="fi_flyte_file", mount=Path("/etc/flyte/secrets"))],
        )
    )


def use_flyte_images() -> None:
    flyte.init(image_builder="flyte-images")  # type: ignore[arg-type]
    # flyte remembers answers and builds per image for the life of the process
    ImageBuildEngine.build.cache_clear()
    ImageBuildEngine.image_exists.cache_clear()


def flyte_home(patch: pytest.MonkeyPatch, home: Path) -> None:
    """flyte's config (our builder) and its sqlite cache of built images in `home`, not the user's."""
    (home / "config.yaml").write_text("image:\n  builder: flyte-images\n")
    patch.setenv("FLYTECTL_CONFIG", str(home / "config.yaml"))  # flyte's sqlite cache goes beside it
    get_config_file.cache_clear()


def layers(uri: str) -> list[str]:
    return list(json.loads(docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", uri).stdout))


@pytest.fixture(scope="module")
def built(local_registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The image, built once through flyte; flyte's config and local cache in a temporary folder."""
    home = tmp_path_factory.mktemp("flyte-home")
    saved = flyte_init._init_config
    with pytest.MonkeyPatch.context() as patch:
        flyte_home(patch, home)
        patch.setenv("FLYTE_IMAGES_CACHE_DIR", str(tmp_path_factory.mktemp("fi-cache")))
        patch.setenv("FI_FLYTE_TOKEN", TOKEN)
        patch.setenv("FI_FLYTE_FILE", FILE_SECRET)
        use_flyte_images()
        image = flyte_image(local_registry, f"fi-flyte-{uuid.uuid4().hex[:8]}", home)
        result = flyte.build(image)
        try:
            yield Built(image, str(result.uri), local_registry)
        finally:
            remove_image(str(result.uri))
            flyte_init._init_config = saved
            get_config_file.cache_clear()


@pytest.fixture(scope="module")
def flyte_standin(engine: None) -> str:
    """flyte's published default image for Python 3.11, or its local stand-in (made when missing)."""
    if docker("image", "inspect", STANDIN, check=False).returncode != 0:
        made = subprocess.run(["bash", str(STANDIN_SCRIPT)], capture_output=True, text=True, check=False, timeout=1200)
        if made.returncode != 0:
            problem = f"{STANDIN_SCRIPT.name} failed: {made.stderr[-2000:]}"
            if os.environ.get("CI"):
                pytest.fail(problem)
            pytest.skip(problem)
    return STANDIN


def test_flyte_build_pushes_at_flyte_s_uri_and_the_image_runs(built: Built) -> None:
    assert built.uri == built.image.uri  # flyte owns the tag
    repository, tag = built.uri.split("/", 1)[1].rsplit(":", 1)
    answer = httpx.head(
        f"http://{built.host}/v2/{repository}/manifests/{tag}",
        headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"},
    )
    assert answer.status_code == 200  # pushed to the registry, not only loaded
    script = " && ".join(
        [
            "jq --version",
            "python -c 'import six, idna, uvproj; print(six.__version__, idna.__version__, uvproj.GREETING)'",
            'echo "$GREETING"',
            "python /app/pkg/hello.py",  # ./pkg under the working folder /app
            "cat /etc/app/settings.toml",
            "cat /app/token-length /app/mounted-length",
            # flyte's default image: its user (the container's, and the owner of copies), /opt/venv
            'whoami && stat -c %U /app/pkg/hello.py && command -v python && echo "$PYTHONPATH"',
        ]
    )
    out = run_in(built.uri, script)
    assert out.splitlines()[1:] == [
        "1.16.0 3.7 hello from uvproj",
        "hello from flyte",
        "hello from pkg",
        "x = 1",
        str(len(TOKEN)),
        str(len(FILE_SECRET)),
        "flyte",
        "flyte",
        "/opt/venv/bin/python",
        "/root",
    ]
    assert out.startswith("jq-")
    labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}", built.uri).stdout)
    assert labels["dev.flyte-images.identifier"] == from_flyte(built.image).identifier  # our identifier, flyte's tag
    history = docker("history", "--no-trunc", built.uri).stdout
    assert TOKEN not in history and FILE_SECRET not in history


def test_flyte_build_on_flyte_s_published_default_image(
    flyte_standin: str, local_registry: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    flyte_home(monkeypatch, tmp_path)
    monkeypatch.setattr(flyte_init, "_init_config", flyte_init._init_config)  # restored afterwards
    use_flyte_images()
    image = flyte.Image.from_debian_base(
        python_version=(3, 11), registry=local_registry, name=f"fi-flyte-pub-{uuid.uuid4().hex[:8]}"
    ).clone(platform=("linux/amd64",))
    image = image.with_pip_packages("six==1.16.0")
    assert image.base_image == flyte_standin
    uri = str(flyte.build(image).uri)
    try:
        assert uri == image.uri
        out = run_in(uri, 'whoami; pwd; python -c "import flyte, six; print(flyte.__version__, six.__version__)"')
        assert out.splitlines() == ["flyte", "/home/flyte", "2.12.1 1.16.0"]
        # FROM the published image, its layers untouched, then one more: the pip step (uv is
        # mounted into it, never copied into the image).
        base, ours = layers(flyte_standin), layers(uri)
        assert ours[: len(base)] == base and len(ours) == len(base) + 1
        # and nothing of flyte's layout again on top of it: no user, no apt step of its recipe
        history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", uri).stdout.splitlines()
        added = history[: len(history) - len(docker("history", "-q", flyte_standin).stdout.splitlines())]
        assert any("six==1.16.0" in step for step in added)
        assert not any("useradd" in step or "build-essential" in step for step in added), added
    finally:
        remove_image(uri)
        get_config_file.cache_clear()


def test_a_second_flyte_build_builds_nothing(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte_images import _build

    def no_build(*_args: object, **_kw: object) -> None:
        raise AssertionError("the image exists: nothing may be built")

    answers: list[str | None] = []
    checker = plugin.exists

    def recorded(uri: str, platforms: tuple[str, ...]) -> str | None:
        answers.append(checker(uri, platforms))
        return answers[-1]

    monkeypatch.setattr(_build, "build_image", no_build)
    monkeypatch.setattr(plugin, "exists", recorded)
    use_flyte_images()
    assert flyte.build(built.image).uri == built.uri
    assert answers == [built.uri]  # our checker said it exists (from the registry: this test has a fresh cache)


# flyte's caches are bound to its own event loop; asking from asyncio.run's loop resets them (fine here)
@pytest.mark.filterwarnings("ignore::async_lru.AlruCacheLoopResetWarning")
def test_a_registry_that_goes_down_is_cannot_tell_never_exists(
    built: Built, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    outcomes: list[object] = []
    checker = plugin.exists

    def recorded(uri: str, platforms: tuple[str, ...]) -> str | None:
        try:
            outcomes.append(checker(uri, platforms))
        except Exception as exc:
            outcomes.append(exc)
            raise
        return outcomes[-1]  # type: ignore[return-value]

    monkeypatch.setattr(plugin, "exists", recorded)
    monkeypatch.setenv("FLYTE_IMAGES_REGISTRY_TIMEOUT", "5")
    with registry() as running:
        image = flyte_image(running.host, "fi-flyte-down", tmp_path)
        use_flyte_images()
        assert asyncio.run(ImageBuildEngine.image_exists(image)) is None  # up, and the tag is not there
    use_flyte_images()
    asyncio.run(ImageBuildEngine.image_exists(image))  # down now
    assert outcomes[0] is None
    assert isinstance(outcomes[1], RegistryError), outcomes
    assert "cannot tell whether" in str(outcomes[1])
    # flyte 2.12.1 then falls back to "assume it exists" when every checker raised; that policy
    # is flyte's (ImageBuildEngine.image_exists), and our checker never answered "exists".
