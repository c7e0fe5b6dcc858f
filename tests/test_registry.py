"""Existence checks against real registries on loopback (Debian's docker-registry).

Covers: exists (with digest and platform), missing, a wrong platform set (single manifests and
indexes), 401 without credentials, credentials from Docker's config.json and from a credential
helper, bearer tokens from a token service (cached per scope), a registry that is down
(unknown, never exists), a 429 then success, and ECR's token call against a local fake.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import pytest
from engine_support import BUSYBOX, free_port
from registry_support import (
    PASSWORD,
    USER,
    FlakyProxy,
    basic_registry,
    docker_login,
    push_busybox,
    token_registry,
)

import flyte_images
from flyte_images import Image, RegistryError
from flyte_images._cli import main
from flyte_images._registry import check_many, parse_reference
from flyte_images._registry.auth import credentials_for, ecr_credentials
from flyte_images._registry.wire import ACCEPT

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]


def check(refs: list[str], platforms: list[str] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return asyncio.run(check_many(refs, platforms, **kw))  # type: ignore[arg-type]


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Docker config folder, also the one flyte-images reads credentials from."""
    folder = tmp_path / "docker-config"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder


@pytest.fixture(scope="module")
def seeded(local_registry: str) -> dict[str, str]:
    return {"digest": push_busybox(local_registry, "team/app", "v1")}


def test_exists_with_digest_and_platform(local_registry: str, seeded: dict[str, str]) -> None:
    (found,) = check([f"{local_registry}/team/app:v1"], ["linux/amd64"])
    assert found.state == "exists" and found.digest == seeded["digest"]
    assert found.platforms == ("linux/amd64",)


def test_missing_tag_and_missing_repository(local_registry: str, seeded: dict[str, str]) -> None:
    results = check([f"{local_registry}/team/app:nope", f"{local_registry}/other/repo:v1"])
    assert [r.state for r in results] == ["missing", "missing"]


def test_wrong_platform_set_is_missing_not_exists(local_registry: str, seeded: dict[str, str]) -> None:
    (found,) = check([f"{local_registry}/team/app:v1"], ["linux/amd64", "linux/arm64"])
    assert found.state == "missing" and "linux/arm64" in found.reason


def test_an_index_is_read_for_its_platforms(local_registry: str, seeded: dict[str, str]) -> None:
    base = f"http://{local_registry}/v2/team/app"
    amd64 = httpx.get(f"{base}/manifests/v1", headers={"Accept": ACCEPT})
    manifest = amd64.json()
    # A second manifest, same layers, with a config that says arm64: enough for an index.
    config = httpx.get(f"{base}/blobs/{manifest['config']['digest']}").json()
    config["architecture"] = "arm64"
    blob = json.dumps(config).encode()
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    upload = httpx.post(f"{base}/blobs/uploads/").headers["Location"]
    upload = upload if upload.startswith("http") else f"http://{local_registry}{upload}"
    sep = "&" if "?" in upload else "?"
    assert httpx.put(f"{upload}{sep}digest={digest}", content=blob).status_code == 201
    arm = dict(manifest, config=dict(manifest["config"], digest=digest, size=len(blob)))
    arm_bytes = json.dumps(arm).encode()
    media = manifest["mediaType"]
    assert httpx.put(f"{base}/manifests/arm", content=arm_bytes, headers={"Content-Type": media}).status_code == 201
    arm_digest = f"sha256:{hashlib.sha256(arm_bytes).hexdigest()}"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": media, "size": len(amd64.content), "digest": amd64.headers["Docker-Content-Digest"],
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": media, "size": len(arm_bytes), "digest": arm_digest,
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    }  # fmt: skip
    put = httpx.put(f"{base}/manifests/multi", content=json.dumps(index), headers={"Content-Type": index["mediaType"]})
    assert put.status_code == 201, put.text
    (both,) = check([f"{local_registry}/team/app:multi"], ["linux/amd64"])
    assert both.state == "exists" and both.platforms == ("linux/amd64", "linux/arm64/v8")
    (lacking,) = check([f"{local_registry}/team/app:multi"], ["linux/amd64", "linux/ppc64le"])
    assert lacking.state == "missing" and "linux/ppc64le" in lacking.reason


def test_basic_auth_needs_credentials_and_takes_them_from_docker_config(docker_config: Path) -> None:
    with basic_registry() as reg:
        docker_login(docker_config, reg.host)
        push_busybox(reg.host, "private/app", "v1", docker_config)
        ref = f"{reg.host}/private/app:v1"
        (found,) = check([ref])
        assert found.state == "exists"
        (docker_config / "config.json").write_text("{}")
        (anonymous,) = check([ref])
        assert anonymous.state == "unknown" and f"docker login {reg.host}" in anonymous.reason
        assert PASSWORD not in anonymous.reason


def test_credentials_from_a_credential_helper(
    docker_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with basic_registry() as reg:
        docker_login(docker_config, reg.host)
        push_busybox(reg.host, "private/app", "v1", docker_config)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        marker = tmp_path / "helper-was-asked"
        helper = bin_dir / "docker-credential-fitest"
        helper.write_text(
            "#!/bin/sh\nread host\n"
            f'echo "$host" > {marker}\n'
            f'printf \'{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\' "$host"\n'
        )
        helper.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
        (docker_config / "config.json").write_text(json.dumps({"credHelpers": {reg.host: "fitest"}}))
        (found,) = check([f"{reg.host}/private/app:v1"])
        assert found.state == "exists"
        assert marker.read_text().strip() == reg.host


def test_token_auth_flow_and_token_cache(docker_config: Path) -> None:
    with token_registry() as (reg, issuer):
        docker_login(docker_config, reg.host)
        push_busybox(reg.host, "tok/app", "v1", docker_config)
        issuer.requests.clear()
        results = check([f"{reg.host}/tok/app:v1", f"{reg.host}/tok/app:v1", f"{reg.host}/tok/app:nope"], concurrency=1)
        assert [r.state for r in results] == ["exists", "exists", "missing"]
        assert len(issuer.requests) == 1  # one token for the scope, reused
        assert issuer.requests[0]["scope"] == "repository:tok/app:pull"
        assert issuer.requests[0]["service"] == "fi-test-registry"
        (docker_config / "config.json").write_text("{}")
        (anonymous,) = check([f"{reg.host}/tok/app:v1"])
        assert anonymous.state == "unknown" and "refused a token anonymously" in anonymous.reason


def test_a_registry_that_is_down_is_unknown_never_exists() -> None:
    start = time.monotonic()
    (down,) = check([f"127.0.0.1:{free_port()}/team/app:v1"], backoff=0.01)
    assert down.state == "unknown" and "could not be reached" in down.reason
    assert time.monotonic() - start < 5


def test_429_then_success_honours_retry_after(local_registry: str, seeded: dict[str, str]) -> None:
    proxy = FlakyProxy(local_registry)  # a fake, only to produce the 429
    try:
        start = time.monotonic()
        (found,) = check([f"{proxy.host}/team/app:v1"])
        assert found.state == "exists" and found.digest == seeded["digest"]
        assert proxy.answers[:2] == [429, 200]
        assert time.monotonic() - start >= 1.0  # waited as Retry-After said
    finally:
        proxy.close()


def test_ecr_token_from_a_local_fake_of_the_token_call(monkeypatch: pytest.MonkeyPatch, docker_config: Path) -> None:
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    with mock_aws():
        creds = ecr_credentials(host)
        assert creds.username == "AWS" and creds.password
        assert credentials_for(host) == creds  # no docker login: ECR is asked
        assert creds.password not in repr(creds)


def test_ecr_hosts_use_the_same_check_path_as_any_registry(
    monkeypatch: pytest.MonkeyPatch, docker_config: Path
) -> None:
    """ECR's token call is the local fake; the manifest checks go to a real registry whose
    htpasswd holds the fake's password, reached through a transport that maps the host."""
    import bcrypt
    from engine_support import registry
    from moto import mock_aws
    from registry_support import basic_registry as _  # noqa: F401 - same support module

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    with mock_aws():
        password = ecr_credentials(host).password
        htpasswd = docker_config.parent / "ecr-htpasswd"
        htpasswd.write_text("AWS:" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode() + "\n")
        with registry(f"auth:\n  htpasswd:\n    realm: ecr\n    path: {htpasswd}\n") as reg:
            login = docker_config.parent / "login"
            login.mkdir()
            (login / "config.json").write_text(
                json.dumps({"auths": {reg.host: {"auth": base64.b64encode(f"AWS:{password}".encode()).decode()}}})
            )
            push_busybox(reg.host, "ecr/app", "v1", login)

            class ToLoopback(httpx.AsyncHTTPTransport):
                async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                    if request.url.host == host:
                        port = int(reg.host.split(":")[1])
                        request.url = request.url.copy_with(scheme="http", host="127.0.0.1", port=port)
                    return await super().handle_async_request(request)

            (found,) = check([f"{host}/ecr/app:v1"], transport=ToLoopback())
            assert found.state == "exists"


def test_build_skips_what_the_registry_has_and_records_its_pushes(
    local_registry: str, capfd: pytest.CaptureFixture[str]
) -> None:
    image = (
        Image.from_base(BUSYBOX).clone(name="skipme", registry=local_registry).with_commands([f"echo {time.time()}"])
    )
    first = flyte_images.build(image, quiet=True)
    assert first.built and first.digest
    second = flyte_images.build(image, quiet=True)
    assert not second.built and second.digest == first.digest
    assert "already in the registry with linux/amd64" in second.reason
    # A registry that does not show the tag yet (here: deleted behind our back) is trusted to
    # lag for a few minutes after our own push.
    ref = parse_reference(first.uri)
    base = f"http://{ref.host}/v2/{ref.repository}/manifests"
    assert httpx.delete(f"{base}/{first.digest}").status_code == 202
    third = flyte_images.build(image, quiet=True)
    assert not third.built and "pushed from this machine" in third.reason


def test_build_never_takes_unknown_for_exists(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    down = f"127.0.0.1:{free_port()}"
    image = Image.from_base(BUSYBOX).clone(name="nowhere", registry=down).with_commands(["true"])
    with pytest.raises(RegistryError, match=r"cannot tell whether .* is already built"):
        flyte_images.build(image, require_check=True, quiet=True)
    with pytest.raises(flyte_images.BuildError):  # not "exists": it builds, and the push fails
        flyte_images.build(image, require_check=False)
    assert "cannot tell whether" in capfd.readouterr().err


def test_cli_exists_exit_codes_and_json(
    local_registry: str, seeded: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = f"{local_registry}/team/app:v1", f"{local_registry}/team/app:nope"
    assert main(["exists", good]) == 0
    assert main(["exists", good, bad]) == 1
    assert main(["exists", good, f"127.0.0.1:{free_port()}/x/y:z"]) == 2
    capsys.readouterr()
    assert main(["exists", good, "--json", "--platform", "linux/amd64"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["images"]
    assert row == {
        "reference": good,
        "state": "exists",
        "digest": seeded["digest"],
        "platforms": ["linux/amd64"],
        "reason": "",
    }


def test_a_refused_push_says_how_to_log_in() -> None:
    with basic_registry() as reg:
        image = Image.from_base(BUSYBOX).clone(name="denied", registry=reg.host).with_commands([f"echo {time.time()}"])
        with pytest.raises(flyte_images.PushDeniedError, match=f"docker login {reg.host}"):
            flyte_images.build(image, quiet=True, require_check=False)


def test_platforms_are_remembered_by_digest_so_a_repeat_check_is_one_request(
    local_registry: str, seeded: dict[str, str]
) -> None:
    from flyte_images._registry.record import PlatformCache

    paths: list[str] = []

    class Counting(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            paths.append(request.url.path)
            return await super().handle_async_request(request)

    ref = f"{local_registry}/team/app:v1"
    (first,) = check([ref], ["linux/amd64"], transport=Counting())
    assert first.exists and [p.split("/")[-2] for p in paths] == ["manifests", "blobs"]
    assert PlatformCache.default().get(seeded["digest"]) == ("linux/amd64",)
    paths.clear()
    (again,) = check([ref], ["linux/amd64"], transport=Counting())
    assert again.exists and again.platforms == ("linux/amd64",) and len(paths) == 1


def test_cache_to_and_cache_from_go_to_buildkit(local_registry: str) -> None:
    run = time.time()
    image = Image.from_base(BUSYBOX).clone(name="cached", registry=local_registry).with_commands([f"echo {run}"])
    pushed = flyte_images.build(image, quiet=True, cache_to=("type=inline",))
    ref = parse_reference(pushed.uri)
    manifest = httpx.get(f"http://{ref.host}/v2/{ref.repository}/manifests/{ref.tag}", headers={"Accept": ACCEPT})
    config = httpx.get(f"http://{ref.host}/v2/{ref.repository}/blobs/{manifest.json()['config']['digest']}").json()
    assert "moby.buildkit.cache.v0" in config  # the inline cache metadata travelled with the image
    rebuilt = flyte_images.build(image, force=True, quiet=True, cache_from=(pushed.uri,))
    assert rebuilt.built and rebuilt.digest
