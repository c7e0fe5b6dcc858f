"""Registry credentials never appear in a reason, a log line, an exception message or the CLI's
output: not when written into a reference (`https://user:token@host/...`), not when a server
echoes them back, not when Docker's config.json around them is broken.

Real registries (Debian's docker-registry, basic and token auth) on loopback refuse wrong
credentials; a fake (no real registry reflects credentials) echoes the ones it was sent into
its Content-Type, its redirect addresses and its status answers.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import logging
from pathlib import Path

import pytest
from engine_support import free_port
from registry_support import (
    MANIFEST_TYPE,
    PASSWORD,
    USER,
    FakeServer,
    basic_registry,
    reply,
    seeded_registry,
    token_registry,
)

from flyte_images import RegistryError
from flyte_images._cli import main
from flyte_images._registry import Existence, check_many
from flyte_images._registry.auth import credentials_for
from flyte_images._registry.record import PlatformCache

SECRET = "tok-5e3c9a-SECRET"
WRONG = "not-the-pw-7f1d"


def check(refs: list[str], platforms: list[str] | None = None, **kw: object) -> list[Existence]:
    return asyncio.run(check_many(refs, platforms, platform_cache=PlatformCache(None), **kw))  # type: ignore[arg-type]


def forms(secret: str, user: str = USER) -> list[str]:
    """The secret as it could leak: plain, as user:secret, and base64 in a Basic header."""
    return [secret, f"{user}:{secret}", base64.b64encode(f"{user}:{secret}".encode()).decode()]


def assert_clean(text: str, secret: str = SECRET) -> None:
    for form in forms(secret):
        assert form.lower() not in text.lower(), f"{form!r} leaked into: {text}"


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    return tmp_path


def log_in(folder: Path, host: str, password: str) -> None:
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    (folder / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))


def test_credentials_written_into_references_never_come_back(capsys: pytest.CaptureFixture[str]) -> None:
    with seeded_registry() as real:
        host = real.reference.split("/")[0]
        refs = [
            f"https://{USER}:{SECRET}@{host}/team/app:v1",
            f"{USER}:{SECRET}@{host}/team/app:v1",
            f"http://{USER}:{SECRET}@{host}/team/app@{real.digest}",
        ]
        results = check(refs)
        assert [r.state for r in results] == ["unknown"] * 3
        for result in results:
            assert "no scheme and no credentials" in result.reason
            assert_clean(json.dumps(result.to_json()))
        assert main(["exists", *refs]) == 2
        assert main(["exists", "--json", *refs]) == 2
    out, err = capsys.readouterr()
    assert_clean(out + err)


def reflecting(dead_port: int) -> FakeServer:
    """A fake registry that asks for basic credentials, then echoes the password it was sent
    into every place an answer can carry text."""

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        sent = handler.headers.get("Authorization")
        if not sent:
            reply(handler, 401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
            return
        password = base64.b64decode(sent.split()[1]).decode().partition(":")[2]
        tag = handler.path.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
        answers = {
            "type": (200, password.encode(), {"Content-Type": f"text/{password}"}),
            "away": (307, b"", {"Location": f"http://{USER}:{password}@127.0.0.1:{dead_port}/x?sig={password}"}),
            "busy": (503, password.encode(), {"Retry-After": password, "Content-Type": "text/plain"}),
            "scheme": (401, b"", {"WWW-Authenticate": f"{password} realm=x"}),
            "digest": (200, b"{}", {"Content-Type": MANIFEST_TYPE, "Docker-Content-Digest": password}),
        }
        reply(handler, *answers.get(tag, (404, password.encode(), {})))

    return FakeServer(answer)


def test_credentials_echoed_by_a_server_are_masked_in_reasons_and_logs(
    config_dir: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="flyte_images")
    with reflecting(free_port()) as fake:
        log_in(config_dir, fake.host, SECRET)
        refs = [f"{fake.host}/team/app:{tag}" for tag in ("type", "away", "busy", "scheme", "digest")]
        results = check(refs, backoff=0.01)
        assert [r.state for r in results] == ["unknown"] * len(refs)
        assert "Content-Type 'text/***'" in results[0].reason
        assert all(r.reason for r in results)
        for result in results:
            assert_clean(json.dumps(result.to_json()))
        assert main(["exists", *refs]) == 2
    assert any("redirected" in r.getMessage() for r in caplog.records)  # there were lines to leak into
    assert any("retry" in r.getMessage() for r in caplog.records)
    assert_clean(caplog.text)
    out, err = capsys.readouterr()
    assert_clean(out + err)


def test_wrong_credentials_refused_by_real_registries_are_not_repeated(
    config_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flyte_images")
    with basic_registry() as basic, token_registry() as (token, _issuer):
        log_in(config_dir, basic.host, WRONG)
        auths = json.loads((config_dir / "config.json").read_text())["auths"]
        auths[token.host] = auths[basic.host]
        (config_dir / "config.json").write_text(json.dumps({"auths": auths}))
        refused, no_token = check([f"{basic.host}/team/app:v1", f"{token.host}/team/app:v1"])
    assert refused.state == "unknown" and "rejected the credentials" in refused.reason
    assert no_token.state == "unknown" and "refused a token with the stored credentials" in no_token.reason
    for text in (refused.reason, no_token.reason, caplog.text):
        assert_clean(text, WRONG)
        assert PASSWORD not in text


@pytest.mark.parametrize(
    "config",
    [
        {"auths": {"{host}": {"auth": [SECRET]}}},
        {"auths": {"{host}": {"auth": "%" + SECRET}}},
        {"auths": {"{host}": {"username": USER, "password": [SECRET]}}},
        {"credHelpers": {"{host}": f"../{SECRET}"}},
        {"credsStore": {"secret": SECRET}},
    ],
)
def test_a_broken_docker_config_never_quotes_the_secret_next_to_the_fault(config: object, config_dir: Path) -> None:
    host = "registry.example:5000"
    (config_dir / "config.json").write_text(json.dumps(config).replace("{host}", host))
    with pytest.raises(RegistryError) as caught:
        credentials_for(host)
    assert "Docker's config" in str(caught.value)
    assert_clean(str(caught.value))
    assert caught.value.__cause__ is None and caught.value.__context__ is None  # no ValidationError quoting it
