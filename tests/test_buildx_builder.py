"""`buildx_builder`: the docker backend hands its builds to a buildx builder made with `docker
buildx create` (a kubernetes-driver builder in production; here a `remote`-driver builder on the
test BuildKit daemon, the one driver that needs no image pulled)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path

import pytest

import flyte_images
from flyte_images import Image, _config
from flyte_images._errors import ConfigError
from flyte_images.builders import _engine

ENV = "FLYTE_IMAGES_BUILDX_BUILDER"


def test_a_bad_builder_name_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "ci k8s")
    with pytest.raises(ConfigError, match=r"FLYTE_IMAGES_BUILDX_BUILDER is 'ci k8s', which is not a buildx builder"):
        _config.configured_buildx_builder()


def test_the_setting_wins_over_buildx_builder_and_is_no_default_builder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("BUILDX_BUILDER", "from-buildx")
    (tmp_path / "flyte-images.toml").write_text('buildx_builder = "ci-k8s"\n')
    monkeypatch.chdir(tmp_path)
    _config.reset()
    assert _engine.selected_builder() == "ci-k8s" and not _engine.default_builder()
    monkeypatch.setenv(ENV, "ci-other")
    assert _engine.selected_builder() == "ci-other"


def _manifest_there(registry: str, repository: str, tag: str) -> bool:
    kinds = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
    request = urllib.request.Request(f"http://{registry}/v2/{repository}/manifests/{tag}", headers={"Accept": kinds})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return isinstance(json.load(answer), dict)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_the_docker_backend_builds_on_the_named_builder_which_exports_the_cache(
    local_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend_support import require_buildkit
    from engine_support import BUSYBOX

    from flyte_images.builders.buildkit import ensure_builder

    named = ensure_builder(require_buildkit().settings())  # a `remote`-driver buildx builder
    monkeypatch.setenv(ENV, named)
    name = f"fi-named-builder-{uuid.uuid4().hex[:8]}"
    image = Image.from_base(BUSYBOX).clone(name=name, registry=local_registry).with_commands([f"echo {name}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the engine's `docker` driver would warn that it cannot export
        built = flyte_images.build(image, builder="docker", cache="registry", quiet=True)
    assert built.built and _manifest_there(local_registry, name, built.uri.rsplit(":", 1)[1])
    # Only a builder of another driver than the engine's own writes a registry cache.
    assert _manifest_there(local_registry, name, "buildcache-linux-amd64")
