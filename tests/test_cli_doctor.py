"""`flyte-images doctor` against the real engine, a real registry on loopback (open and with
basic auth) and a Docker host that is not there."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from registry_support import PASSWORD, USER, basic_registry

from flyte_images._cli import main


def _doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, dict[str, str]]]:
    code = main(["doctor", "--json", *argv])
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is (code == 0)
    return code, {c["check"]: c for c in report["checks"]}


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Docker config of the test's own (no logins), keeping the user's CLI plugins."""
    config = tmp_path / "docker"
    config.mkdir()
    plugins = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "cli-plugins"
    if plugins.is_dir():
        (config / "cli-plugins").symlink_to(plugins)
    (config / "config.json").write_text("{}")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    return config


@pytest.mark.engine
def test_doctor_passes_on_a_working_engine_and_registry(
    engine: None, local_registry: str, docker_config: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("FLYTE_IMAGES_REGISTRY", f"{local_registry}/team")
    code, checks = _doctor(capsys)
    assert code == 0, checks
    assert checks["engine"]["status"] == "ok" and "Docker" in checks["engine"]["detail"]
    assert checks["buildx"]["status"] == "ok"
    assert checks["buildkitd"]["status"] == "skip"
    registry = checks[f"registry {local_registry}/team"]
    assert registry["status"] == "ok" and "answers /v2/" in registry["detail"]
    assert "no credential stored" in registry["detail"]
    assert checks["ca-bundle"]["status"] == "ok"

    assert main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines][:3] == ["engine", "buildx", "buildkitd"]


@pytest.mark.engine
def test_doctor_says_a_registry_needs_a_login_and_sees_one(
    engine: None, docker_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with basic_registry() as reg:
        code, checks = _doctor(capsys, "--registry", reg.host)
        check = checks[f"registry {reg.host}"]
        assert code == 1 and check["status"] == "fail"
        assert f"docker login {reg.host}" in check["detail"]

        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        (docker_config / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        code, checks = _doctor(capsys, "--registry", reg.host)
        check = checks[f"registry {reg.host}"]
        assert check["status"] == "ok" and "a credential stored" in check["detail"], check
        assert PASSWORD not in json.dumps(checks)

        (docker_config / "config.json").write_text(
            json.dumps({"auths": {reg.host: {"auth": base64.b64encode(f"{USER}:wrong-pw".encode()).decode()}}})
        )
        code, checks = _doctor(capsys, "--registry", reg.host)
        assert code == 1 and "refused the stored credential" in checks[f"registry {reg.host}"]["detail"]


@pytest.mark.engine
def test_doctor_fails_naming_a_docker_host_that_is_not_there(engine: None, tmp_path: Path) -> None:
    missing = tmp_path / "docker.sock"
    done = subprocess.run(
        [sys.executable, "-m", "flyte_images._cli", "doctor"],
        env={**os.environ, "DOCKER_HOST": f"unix://{missing}"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    engine_line = next(line for line in done.stdout.splitlines() if line.split()[1] == "engine")
    assert engine_line.startswith("fail")
    assert f"DOCKER_HOST=unix://{missing}" in engine_line


def test_doctor_checks_the_ca_bundle_and_the_buildkit_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_CA_BUNDLE", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("FLYTE_IMAGES_BUILDER", "buildkit")
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_ADDR", f"unix://{tmp_path / 'buildkitd.sock'}")
    code, checks = _doctor(capsys)
    assert code == 1
    assert checks["ca-bundle"]["status"] == "fail" and "missing.pem" in checks["ca-bundle"]["detail"]
    assert checks["buildkitd"]["status"] == "fail" and "there is no socket at" in checks["buildkitd"]["detail"]

    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    _code, checks = _doctor(capsys, "--ca-bundle", str(bundle))
    assert checks["ca-bundle"]["status"] == "ok" and "1 certificate" in checks["ca-bundle"]["detail"]
