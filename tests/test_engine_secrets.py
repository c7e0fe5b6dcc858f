"""Secrets on the real engine: ten images with secret mounts (from an env var and from a file),
and the value, its base64 and its hex form appear in no byte of anything a user can see."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from engine_support import BUSYBOX

import flyte_images
from flyte_images import Image, Secret, StepFailedError, TaskEnvironment
from flyte_images._plan.explain import breakdown
from flyte_images._plan.plan import plan

pytestmark = pytest.mark.engine


def _forms(value: str) -> list[bytes]:
    forms = []
    for raw in (value.encode(), value.encode() + b"\n"):
        forms += [raw.strip(), base64.b64encode(raw).rstrip(b"="), raw.hex().encode()]
    return forms


def _image(run: str, i: int) -> Image:
    as_file = Secret(key="file-token", mount=Path("/run/secrets/tok"))
    # Every command names its image: BuildKit would otherwise reuse a step whose input layer has
    # the same content (an `echo` changes no file), and nothing would be printed to check.
    commands = [
        f"echo image {i} {run}",
        f'test "$ENV_TOKEN" != "" && echo "env: $ENV_TOKEN ({i} {run})"',
        f"cat /run/secrets/tok; echo '({i} {run})'",
        f"echo $ENV_TOKEN | base64; echo '({i} {run})'",
    ]
    return (
        Image.from_base(BUSYBOX)
        .clone(name=f"fi-secrets-{run}-{i}")
        .with_commands(commands, secret_mounts=[Secret(key="env-token"), as_file])
    )


@pytest.fixture(params=["docker", "buildkit"])
def backend_name(request: pytest.FixtureRequest, engine: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every engine backend; buildkit builds on the test daemon and loads into the engine."""
    if request.param == "buildkit":
        from backend_support import require_buildkit

        monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_ADDR", require_buildkit().unix_addr)
    monkeypatch.setenv("FLYTE_IMAGES_BUILDER", request.param)
    return str(request.param)


def test_ten_images_with_secrets_leak_nothing(
    backend_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    run = f"{backend_name}-{uuid.uuid4().hex[:8]}"
    env_value, file_value = f"env-secret-{uuid.uuid4().hex}", f"file-secret-{uuid.uuid4().hex}"
    (tmp_path / "tok").write_text(file_value + "\n")
    monkeypatch.setenv("ENV_TOKEN", env_value)
    monkeypatch.setenv("FILE_TOKEN_FILE", str(tmp_path / "tok"))
    envs = [TaskEnvironment(f"s{i}", image=_image(run, i)) for i in range(10)]
    tags_before = [plan(env.image).identifier for env in envs]  # type: ignore[arg-type]

    from flyte_images._build import progress as _progress

    log = io.StringIO()
    real = _progress.progress_sink
    monkeypatch.setattr(_progress, "progress_sink", lambda quiet=False, stream=None, title="": real(False, log, title))
    uris = [flyte_images.build(env.image, push=False) for env in envs]  # type: ignore[arg-type]
    cache = flyte_images.build_images(*envs, push=False)
    seen = [log.getvalue().encode(), capfd.readouterr().err.encode(), cache.to_json().encode()]
    seen += [breakdown(plan(env.image)).to_json().encode() for env in envs]  # type: ignore[arg-type]
    for uri in uris:
        seen.append(subprocess.run(["docker", "history", "--no-trunc", uri], capture_output=True, check=True).stdout)
        seen.append(subprocess.run(["docker", "save", uri], capture_output=True, check=True).stdout)
        seen.append(uri.encode())
    assert "env: ***" in log.getvalue()  # the step printed it (and its base64), redacted
    assert log.getvalue().count("***") >= 3 * len(envs)
    for blob in seen:
        for form in _forms(env_value) + _forms(file_value):
            assert form not in blob

    monkeypatch.setenv("ENV_TOKEN", "another-value-entirely")
    assert [plan(env.image).identifier for env in envs] == tags_before  # type: ignore[arg-type]
    subprocess.run(["docker", "image", "rm", "-f", *uris], capture_output=True, check=False)


def test_a_failing_step_that_printed_a_secret_keeps_it_out_of_the_exception(
    engine: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = f"pem-line-one-{uuid.uuid4().hex}\npem-line-two-{uuid.uuid4().hex}\n"
    monkeypatch.setenv("PEM_KEY", value)
    image = (
        Image.from_base(BUSYBOX)
        .clone(name=f"fi-secrets-fail-{uuid.uuid4().hex[:8]}")
        .with_commands(['echo "$PEM_KEY"; exit 4'], secret_mounts=[Secret(key="pem-key")])
    )
    with pytest.raises(StepFailedError) as info:
        flyte_images.build(image, push=False, quiet=True)
    text = str(info.value) + json.dumps(info.value.tail)
    assert info.value.exit_code == 4
    for line in value.splitlines():
        assert line not in text
