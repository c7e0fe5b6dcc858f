"""One `Registry` checks images and uploads their parts over one session: a build's checks and its
push ask for credentials once. Against a real registry with basic auth (Debian's
docker-registry on loopback) and a credential helper that records each time it is asked."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest
from registry_support import PASSWORD, USER, basic_registry, sha256

from flyte_images._registry import Reference, Registry


def test_the_checks_and_the_push_of_one_registry_ask_for_credentials_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = tmp_path / "asked"
    helper = tmp_path / "bin" / "docker-credential-fitest"
    helper.parent.mkdir()
    helper.write_text(
        f'#!/bin/sh\nread host\necho "$host" >> {asked}\n'
        f'printf \'{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\' "$host"\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "fitest"}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    data = os.urandom(1 << 16)

    async def build(host: str) -> tuple[str, bool, str]:
        async with Registry() as registry:
            before = await registry.check(f"{host}/team/app:v1")
            sent = await registry.push_blob(Reference(host, "team/app", "v1"), data, sha256(data))
            after = await registry.check(f"{host}/team/app:v2")
            return before.state, sent, after.state

    with basic_registry() as reg:
        assert asyncio.run(build(reg.host)) == ("missing", True, "missing")
        blob = httpx.get(f"http://{reg.host}/v2/team/app/blobs/{sha256(data)}", auth=(USER, PASSWORD))
    assert blob.status_code == 200 and blob.content == data
    assert asked.read_text().splitlines() == [reg.host]
