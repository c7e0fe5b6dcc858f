"""The file part appended without the engine gives the image the engine builds: proven on a real
engine and a loopback registry by pulling both and comparing what is inside and the config."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from engine_support import BUSYBOX, docker, remove_image, run_in

import flyte_images
from flyte_images import Image
from flyte_images._append import append, engine_part, file_part
from flyte_images._plan import staged_plan

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

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
    (src / "main.sh").write_text("#!/bin/sh\ncat /app/proj/pkg/msg.txt\n")
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
        part = file_part(plan)
        digest = append(
            base.uri,
            part.layers,
            target,
            env=part.env,
            workdir=part.workdir,
            labels=part.labels,
            history=part.history,
        )
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
        part = file_part(plan)
        append(base.uri, part.layers, edited, env=part.env, workdir=part.workdir, labels=part.labels)
        labels = dict(plan.labels)
    out = docker("run", "--rm", pulled(edited), "sh", "-c", "echo $GREETING; pwd; main.sh").stdout
    assert out.split("\n")[:3] == ["hello world", "/app", "edited"]
    assert inspect(edited)["Labels"] == {**(inspect(base.uri)["Labels"] or {}), **labels}
    for uri in (full.uri, base.uri, target, edited):
        remove_image(uri)
