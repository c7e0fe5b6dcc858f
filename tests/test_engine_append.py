"""The file part appended without the engine gives the image the engine builds: proven on a real
engine and a loopback registry by pulling both and comparing what is inside and the config."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from engine_support import BUSYBOX, docker, remove_image, run_in
from test_engine_multiarch import busybox_both, emulation, run_on  # noqa: F401 (fixtures)

import flyte_images
from flyte_images import Image
from flyte_images._append import append_async, engine_part, file_part
from flyte_images._plan.explain import history
from flyte_images._plan.plan import description_key, staged_plan
from flyte_images.errors import ConfigError

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

FLYTE_STANDIN = "ghcr.io/flyteorg/flyte:py3.11-v2.12.1"  # tests/test_engine_dropin.py makes it

# Every path under /app: name, type, mode, owner, size, link target or content digest, and the
# time of files and links (a folder's time in the engine's image is when the build wrote into
# it, which nothing can reproduce).
LISTING = r"""
find /app | sort | while read -r p; do
  line=$(stat -c '%n|%F|%a|%u:%g|%s' "$p")
  if [ -L "$p" ] || [ ! -d "$p" ]; then line="$line|$(stat -c '%Y' "$p")"; fi
  if [ -L "$p" ]; then line="$line|$(readlink "$p")"
  elif [ -f "$p" ]; then line="$line|$(sha256sum "$p" | cut -d' ' -f1)"; fi
  echo "$line"
done
"""


def make_project(root: Path) -> Path:
    src = root / "proj"
    (src / "pkg" / "deep" / "er").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "main.sh").write_text('#!/bin/sh\ncat "$(dirname "$0")/pkg/msg.txt"\n')
    (src / "main.sh").chmod(0o755)
    (src / "pkg" / "msg.txt").write_text("first\n")
    (src / "pkg" / "private.txt").write_text("p")
    (src / "pkg" / "private.txt").chmod(0o600)
    (src / "pkg" / "deep" / "er" / "data.bin").write_bytes(bytes(range(256)) * 40)
    (src / "pkg" / "deep").chmod(0o750)
    os.symlink("msg.txt", src / "pkg" / "msg-link.txt")
    os.symlink("deep/er", src / "pkg" / "dir-link")
    return src


def inspect(uri: str) -> dict[str, Any]:
    config = json.loads(docker("image", "inspect", uri).stdout)[0]["Config"]
    keys = ("Env", "WorkingDir", "User", "Entrypoint", "Cmd", "Labels")
    return {key: config.get(key) for key in keys}


def pulled(uri: str) -> str:
    remove_image(uri)  # what the registry holds, not a copy the engine kept
    docker("pull", uri)
    return uri


def test_appended_file_part_equals_the_engine_build(tmp_path: Path, local_registry: str) -> None:
    src = make_project(tmp_path)
    image = (
        Image.from_base(BUSYBOX)
        .clone(name="fi-test-append", registry=local_registry)
        .with_commands(["mkdir -p /opt/tool && echo tool > /opt/tool/v"])
        .with_source_folder(src, dst="/app")
        .with_env_vars({"GREETING": "hello world", "PATH": "/app/proj:/usr/sbin:/usr/bin:/sbin:/bin"})
        .with_workdir("/app")
    )
    full = flyte_images.build(image, force=True, quiet=True)
    base = flyte_images.build(engine_part(image), force=True, quiet=True)
    assert full.built and base.built and full.uri != base.uri

    target = f"{local_registry}/fi-test-append:appended-{uuid.uuid4().hex[:8]}"
    with staged_plan(image) as plan:
        assert plan.uri == full.uri
        part = file_part(plan, folders={"app": None})  # busybox has no /app
        appending = append_async(
            base.uri,
            part.layers,
            target,
            env=part.env,
            workdir=part.workdir,
            labels=part.labels,
            history=part.history,
        )
        digest = asyncio.run(appending)
    assert digest.startswith("sha256:")

    engine_built, appended = pulled(full.uri), pulled(target)
    listing = run_in(engine_built, LISTING)
    assert "/app/proj/pkg/msg-link.txt|symbolic link" in listing and "|700|" not in listing
    got = run_in(appended, LISTING)
    assert got == listing
    assert inspect(appended) == inspect(engine_built)
    assert run_in(appended, "cat /opt/tool/v").strip() == "tool"

    # An edit reaches the image through a second append on the same engine part.
    (src / "pkg" / "msg.txt").write_text("edited\n")
    edited = f"{local_registry}/fi-test-append:edited-{uuid.uuid4().hex[:8]}"
    with staged_plan(image) as plan:
        part = file_part(plan, folders={"app": None})
        asyncio.run(append_async(base.uri, part.layers, edited, env=part.env, workdir=part.workdir, labels=part.labels))
        labels = dict(plan.labels)
    out = docker("run", "--rm", pulled(edited), "sh", "-c", "echo $GREETING; pwd; main.sh").stdout
    assert out.split("\n")[:3] == ["hello world", "/app", "edited"]
    assert inspect(edited)["Labels"] == {**(inspect(base.uri)["Labels"] or {}), **labels}
    for uri in (full.uri, base.uri, target, edited):
        remove_image(uri)


def _events(image: Image, **options: Any) -> tuple[flyte_images.ImageBuild, list[str]]:
    """build_image with its progress steps collected."""
    from flyte_images._build import BuildOptions, build_image

    steps: list[str] = []
    result = build_image(image, BuildOptions.of(quiet=True, **options), progress=lambda event: steps.append(event.text))
    return result, steps


def _edit_target(tmp_path: Path, registry: str, name: str, marker: str, src: Path) -> Image:
    return (
        Image.from_base(BUSYBOX)
        .clone(name=name, registry=registry)
        .with_commands([f"mkdir -p /opt/tool && echo {marker} > /opt/tool/v"])
        .with_source_folder(src, dst="/app/code")
        .with_env_vars({"GREETING": "hello world", "PATH": "/app/code/proj:/usr/sbin:/usr/bin:/sbin:/bin"})
        .with_workdir("/app/code")
    )


def test_build_chooses_the_append_path_and_equals_the_engine(tmp_path: Path, local_registry: str) -> None:
    src, marker = make_project(tmp_path), uuid.uuid4().hex
    by_engine = flyte_images.build(
        _edit_target(tmp_path, local_registry, "fi-test-append-e", marker, src), builder="docker", quiet=True
    )
    assert by_engine.built and by_engine.path == "engine"

    # First build: the engine part is not in the registry yet, so the engine builds it.
    image = _edit_target(tmp_path, local_registry, "fi-test-append-a", marker, src)
    first, steps = _events(image)
    assert first.built and first.path == "append"
    assert first.uri.rsplit(":", 1)[1] == by_engine.uri.rsplit(":", 1)[1]  # one identifier, either path
    assert any("building it with the engine" in s for s in steps)
    assert "built by the engine" in first.reason
    assert run_in(pulled(first.uri), LISTING) == run_in(pulled(by_engine.uri), LISTING)
    assert inspect(first.uri) == inspect(by_engine.uri)

    # An edit: the engine part is found, only the file part is made and pushed.
    (src / "pkg" / "msg.txt").write_text("edited\n")
    second, steps = _events(image)
    assert second.built and second.path == "append" and second.uri != first.uri
    assert not any("building it with the engine" in s for s in steps)
    assert "which was in the registry" in second.reason
    assert history(description_key(image))[-1].how == second.reason  # what `explain` shows
    out = docker("run", "--rm", pulled(second.uri), "sh", "-c", "echo $GREETING; pwd; main.sh").stdout
    assert out.split("\n")[:3] == ["hello world", "/app/code", "edited"]
    # Nothing changed since: skipped like any existing image.
    third = flyte_images.build(image, quiet=True)
    assert not third.built and third.uri == second.uri
    for uri in (by_engine.uri, first.uri, second.uri):
        remove_image(uri)


def test_builder_names_force_either_path(
    tmp_path: Path, local_registry: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_project(tmp_path)
    image = _edit_target(tmp_path, local_registry, "fi-test-append-force", uuid.uuid4().hex, src)
    planned = flyte_images.build(image, dry_run=True, builder="append")
    assert planned.path == "append" and "after building it with the engine" in planned.reason
    engine = flyte_images.build(image, builder="docker", quiet=True)
    assert engine.path == "engine"
    again = flyte_images.build(image, builder="append", force=True, quiet=True)
    assert again.path == "append" and again.uri == engine.uri
    local = image.clone(registry=None, name="fi-test-append-local")
    with pytest.raises(ConfigError, match="writes the image into a registry"):
        flyte_images.build(local, builder="append", push=False)
    assert flyte_images.build(local, push=False, quiet=True).path == "engine"  # loaded: the engine
    remove_image(engine.uri)


def test_a_flyte_layout_copy_owned_by_flyte_equals_the_engine(tmp_path: Path, local_registry: str) -> None:
    """COPY --chown=flyte:flyte: the uid and gid come from the engine part's /etc/passwd and
    /etc/group, read from its layers in the registry; new folders are made as flyte, existing
    ones (the working folder) keep their owner and mode."""
    if docker("image", "inspect", FLYTE_STANDIN, check=False).returncode != 0:
        pytest.skip(
            "the flyte stand-in image is made by tests/test_engine_dropin.py (fixtures/engine/flyte-standin.sh)"
        )
    src, marker = make_project(tmp_path), uuid.uuid4().hex

    def image(name: str) -> Image:
        return (
            Image.from_debian_base(python_version=(3, 11))
            .clone(name=name, registry=local_registry)
            .with_commands([f"echo {marker} > /opt/marker"])
            .with_source_folder(src)
            .with_source_folder(src / "pkg", dst="/opt/extra/deep")
            .with_env_vars({"A": "1"})
        )

    by_engine = flyte_images.build(image("fi-test-append-fe"), builder="docker", quiet=True)
    appended, steps = _events(image("fi-test-append-fa"))
    assert appended.path == "append" and any("/etc/passwd" in s for s in steps)
    script = LISTING.replace("find /app", "find /home/flyte /opt/extra /opt")
    assert "flyte" in run_in(pulled(by_engine.uri), "stat -c %U /home/flyte/proj/pkg/msg.txt /opt/extra")
    assert run_in(pulled(appended.uri), script) == run_in(by_engine.uri, script)
    assert inspect(appended.uri) == inspect(by_engine.uri)
    for uri in (by_engine.uri, appended.uri):
        remove_image(uri)


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "flyte_images._cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=600, check=False)


def test_two_platforms_append_without_an_engine(
    busybox_both: str,  # noqa: F811
    local_registry: str,
    tmp_path: Path,
) -> None:
    """With the engine part in the registry, a source edit to a two-platform image is built and
    pushed by a process that has no Docker engine at all (no socket, no docker binary): the
    new index has both platforms, each runs the edited file, and equals the engine's build."""
    src, marker = make_project(tmp_path), uuid.uuid4().hex
    targets = tmp_path / "app.py"
    targets.write_text(
        "from pathlib import Path\nfrom flyte_images import Image\n"
        f"image = (Image.from_base({busybox_both!r}).clone(name='fi-test-append-multi', registry={local_registry!r},"
        f" platform=('linux/amd64', 'linux/arm64')).with_commands(['uname -m > /arch; echo {marker}'])"
        f".with_source_folder(Path({str(src)!r}), dst='/app').with_env_vars({{'A': '1'}}))\n"
    )
    first = _cli("build", str(targets), "--json", "--quiet")
    assert first.returncode == 0, first.stderr
    (src / "pkg" / "msg.txt").write_text("edited without an engine\n")

    no_engine = {
        **os.environ,
        "PATH": str(tmp_path / "empty-path"),
        "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
        "BUILDKIT_HOST": f"unix://{tmp_path}/no-buildkit.sock",
    }
    refused = _cli("build", str(targets), "--builder", "docker", "--force", "--quiet", env=no_engine)
    assert refused.returncode == 1 and "docker" in refused.stderr.lower()  # really no engine here
    edited = _cli("build", str(targets), "--json", "--quiet", env=no_engine)
    assert edited.returncode == 0, edited.stderr
    report = json.loads(edited.stdout)
    ((name, uri),) = report["image_lookup"].items()
    assert report["status"][name] == "built"
    found = _cli("exists", uri, "--platform", "linux/amd64", "--platform", "linux/arm64", env=no_engine)
    assert found.returncode == 0, found.stdout + found.stderr

    by_engine = flyte_images.build(
        Image.from_base(busybox_both)
        .clone(name="fi-test-append-multi-e", registry=local_registry, platform=("linux/amd64", "linux/arm64"))
        .with_commands([f"uname -m > /arch; echo {marker}"])
        .with_source_folder(src, dst="/app")
        .with_env_vars({"A": "1"}),
        builder="docker",
        quiet=True,
    )
    assert by_engine.uri.rsplit(":", 1)[1] == uri.rsplit(":", 1)[1]
    for platform, arch in (("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")):
        ours = run_on(platform, uri, "sh", "-c", f"cat /arch /app/proj/pkg/msg.txt; {LISTING}")
        assert ours.split("\n")[:2] == [arch, "edited without an engine"]
        assert ours == run_on(platform, by_engine.uri, "sh", "-c", f"cat /arch /app/proj/pkg/msg.txt; {LISTING}")
    for ref in (uri, by_engine.uri):
        remove_image(ref)
