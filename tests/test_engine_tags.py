"""Extra tags (`tags=`, `--tag`): pushed beside the content tag, pointed at an image that exists
without a build, never part of the identifier."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from engine_support import BUSYBOX, registry

import flyte_images
from flyte_images import ConfigError, Image, InvalidLayerArgument, TaskEnvironment

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def _digest(registry: str, repository: str, tag: str) -> str | None:
    answer = httpx.head(f"http://{registry}/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT})
    return answer.headers.get("Docker-Content-Digest") if answer.status_code == 200 else None


def _image(registry: str, name: str) -> Image:
    return (
        Image.from_base(BUSYBOX)
        .clone(name=name, registry=registry)
        .with_commands([f"echo {uuid.uuid4().hex} > /marker"])
    )


@pytest.mark.parametrize("route", ["engine", "append"])
def test_tags_are_pushed_beside_the_content_tag_and_pointed_at_an_existing_image(
    local_registry: str, route: str
) -> None:
    name = f"tags-{uuid.uuid4().hex[:8]}"
    image = _image(local_registry, name)
    if route == "append":  # trailing env vars: appended to the engine part in the registry
        image = image.with_env_vars({"MODE": "tagged"})
    identifier = image.identifier
    first = flyte_images.build(image, quiet=True, tags=("latest", "v1"))
    assert first.built and first.uri == f"{local_registry}/{name}:{identifier}"  # the tag is still the content's
    assert (first.path == "append") == (route == "append")
    content = _digest(local_registry, name, identifier)
    assert content is not None
    assert _digest(local_registry, name, "latest") == _digest(local_registry, name, "v1") == content
    again = flyte_images.build(image, quiet=True, tags=["stable"])
    assert not again.built  # found: tagged without a build
    assert _digest(local_registry, name, "stable") == content
    assert image.identifier == identifier


def test_a_deploy_tags_every_image_including_those_that_exist(local_registry: str) -> None:
    name = f"tags-deploy-{uuid.uuid4().hex[:8]}"
    image = _image(local_registry, name)
    flyte_images.build(image, quiet=True)
    cache = flyte_images.build_images(TaskEnvironment("env", image=image), quiet=True, tags="prod")
    assert cache.status["env"] == "exists"
    assert _digest(local_registry, name, "prod") == _digest(local_registry, name, image.identifier)


def test_bad_tags_and_tags_of_a_local_image_are_refused(local_registry: str) -> None:
    image = _image(local_registry, "tags-bad")
    with pytest.raises(InvalidLayerArgument, match=r"tags: 'v1\\n' is neither a tag name"):
        flyte_images.build(image, quiet=True, tags=("v1\n",))
    with pytest.raises(InvalidLayerArgument, match="'-x' is neither a tag name"):
        flyte_images.build(image, quiet=True, tags=("-x",))
    local = Image.from_base(BUSYBOX).clone(name="tags-local").with_commands(["true"])
    with pytest.raises(ConfigError, match="tags latest are pushed to the image's registry"):
        flyte_images.build(local, quiet=True, tags=("latest",), push=False)


def test_the_cli_pushes_extra_tags(local_registry: str, tmp_path: object) -> None:
    import subprocess
    import sys
    from pathlib import Path

    name = f"tags-cli-{uuid.uuid4().hex[:8]}"
    images = Path(str(tmp_path)) / "images.py"
    images.write_text(
        "from flyte_images import Image\n"
        f"app = Image.from_base({BUSYBOX!r}).clone(name={name!r}, registry={local_registry!r})"
        f".with_commands(['echo {uuid.uuid4().hex} > /m'])\n"
    )
    cli = [sys.executable, "-m", "flyte_images._cli", "build", f"{images}:app", "-q"]
    subprocess.run([*cli, "--tag", "latest", "--tag", "v2"], check=True, capture_output=True)
    refused = subprocess.run([*cli, "--tag", "no/slash"], check=False, capture_output=True, text=True)
    assert refused.returncode == 1 and "'no/slash' is neither a tag name" in refused.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "flyte_images._cli", "id", f"{images}:app", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    identifier = json.loads(listed.stdout)["images"][0]["identifier"]
    content = _digest(local_registry, name, identifier)
    assert content is not None
    assert _digest(local_registry, name, "latest") == _digest(local_registry, name, "v2") == content


@pytest.mark.parametrize("where", ["same registry", "another registry"])
def test_a_full_reference_elsewhere_gets_the_image_blobs_and_all(local_registry: str, where: str) -> None:
    name = f"tags-full-{uuid.uuid4().hex[:8]}"
    image = _image(local_registry, name).with_env_vars({"MODE": "copied"})  # appended: several layers
    built = flyte_images.build(image, quiet=True)
    content = _digest(local_registry, name, image.identifier)
    with registry() as other:
        host = local_registry if where == "same registry" else other.host
        target = f"{host}/elsewhere/{name}:release"
        again = flyte_images.build(image, quiet=True, tags=(target,))
        assert built.built and not again.built
        assert _digest(host, f"elsewhere/{name}", "release") == content
        # the copy is whole: every blob of the manifest is in the target repository
        manifest = httpx.get(f"http://{host}/v2/elsewhere/{name}/manifests/release", headers={"Accept": ACCEPT}).json()
        for descriptor in [manifest["config"], *manifest["layers"]]:
            blob = httpx.head(f"http://{host}/v2/elsewhere/{name}/blobs/{descriptor['digest']}")
            assert blob.status_code == 200, descriptor
