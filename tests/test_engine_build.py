"""End to end on a real Docker engine: build, then `docker run` and look inside.

Package installs reach the package index from inside the build; on machines behind a
TLS-inspecting proxy the host's CA bundle is given to the build as a secret (the CA feature).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import uuid
from pathlib import Path

import pytest
from engine_support import BASE_IMAGE, BUSYBOX, docker, remove_image, run_in

import flyte_images
from flyte_images import (
    BaseImageNotFoundError,
    EngineUnavailableError,
    Image,
    Secret,
    SecretNotFoundError,
    StepFailedError,
)

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]
PROJECTS = Path(__file__).resolve().parent.parent / "fixtures" / "projects"


def base(name: str) -> Image:
    return Image.from_debian_base(python_version=(3, 11), install_flyte=False, name=f"fi-test-{name}")


def build(image: Image, **kw: object) -> flyte_images.ImageBuild:
    result = flyte_images.build(image, force=True, quiet=True, **kw)  # type: ignore[arg-type]
    assert result.built
    return result


def make_tree(root: Path) -> Path:
    tree = root / "tree"
    (tree / "nested" / "a" / "b").mkdir(parents=True)
    (tree / "empty").mkdir()
    (tree / "secret").mkdir()
    (tree / "__pycache__").mkdir()
    (tree / ".dockerignore").write_text("*.log\nsecret/\n!keep.log\n")
    (tree / "app.py").write_text("print('app')\n")
    (tree / "run.sh").write_text("#!/bin/sh\necho run\n")
    (tree / "run.sh").chmod(0o755)
    (tree / "private.txt").write_text("x")
    (tree / "private.txt").chmod(0o600)
    (tree / "keep.log").write_text("kept")
    (tree / "drop.log").write_text("dropped")
    (tree / "secret" / "key.txt").write_text("k")
    (tree / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\x00")
    (tree / "nested" / "a" / "b" / "c.txt").write_text("deep")
    (tree / "link").symlink_to("app.py")
    return tree


def test_layers_work_inside_the_container(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tmp_path / "settings.toml").write_text("x = 1\n")
    (tmp_path / "settings.toml").chmod(0o640)
    image = (
        base("layers")
        .with_apt_packages("jq")
        .with_pip_packages("six==1.16.0")
        .with_requirements(PROJECTS / "reqs" / "requirements.txt")
        .with_env_vars({"GREETING": 'hello "world" $HOME \\ end', "MODE": "test"})
        .with_source_folder(tree, dst="/srv")
        .with_source_file(tmp_path / "settings.toml", dst="/etc/app")
        .with_workdir("/srv/tree")
        .with_commands(["echo one >> /order", "echo two >> /order\necho three >> /order"])
    )
    uri = build(image)
    script = r"""
set -e
echo '{"a": 7}' | jq -r .a
python -c "import six, idna; print(six.__version__, idna.__version__)"
printf '%s\n' "$GREETING" "$MODE"
pwd
cat /order
find /srv/tree -printf '%P %y %m %l\n' | sort
stat -c '%a' /etc/app/settings.toml
"""
    out = run_in(uri, script).splitlines()
    # The CA bundle (a build secret here), apt's lists and uv's cache stay out of the image.
    assert run_in(uri, "test ! -e /run/secrets/flyte-images-ca && echo gone").strip() == "gone"
    # As root: the image runs as `flyte`, who may not read apt's partial/ folder. lock: from the base.
    leftovers = docker("run", "--rm", "--user", "root", "--entrypoint", "/bin/sh", uri, "-c",
                       "find /var/lib/apt/lists /root/.cache -type f ! -name lock")  # fmt: skip
    assert leftovers.returncode == 0 and leftovers.stdout == ""
    assert out[0] == "7"
    assert out[1] == "1.16.0 3.7"
    assert out[2:4] == ['hello "world" $HOME \\ end', "test"]
    assert out[4] == "/srv/tree"
    assert out[5:8] == ["one", "two", "three"]
    listing = out[8:-1]
    assert listing == sorted(
        [
            " d 755 ",
            ".dockerignore f 644 ",
            "app.py f 644 ",
            "empty d 755 ",
            "keep.log f 644 ",
            "link l 777 app.py",
            "nested d 755 ",
            "nested/a d 755 ",
            "nested/a/b d 755 ",
            "nested/a/b/c.txt f 644 ",
            "private.txt f 600 ",
            "run.sh f 755 ",
        ]
    )
    assert out[-1] == "640"


def test_uv_project_dependencies_and_install_project() -> None:
    deps = build(base("uvdeps").with_uv_project(PROJECTS / "uvproj" / "pyproject.toml"))
    out = run_in(deps, "python -c 'import six; print(six.__version__)'; python -c 'import uvproj' 2>&1 || true")
    assert out.splitlines()[0] == "1.16.0"
    assert "No module named 'uvproj'" in out  # dependencies only
    full = build(
        base("uvfull").with_uv_project(PROJECTS / "uvproj" / "pyproject.toml", project_install_mode="install_project")
    )
    assert run_in(full, "python -c 'import uvproj; print(uvproj.GREETING)'").strip() == "hello from uvproj"


def test_poetry_project_dependencies_and_install_project() -> None:
    deps = build(base("poetrydeps").with_poetry_project(PROJECTS / "poetryproj" / "pyproject.toml"))
    assert run_in(deps, "python -c 'import idna; print(idna.__version__)'").strip() == "3.7"
    assert run_in(deps, "find /root/.cache -type f") == ""  # poetry's and uv's caches stayed in their mounts
    full = build(
        base("poetryfull").with_poetry_project(
            PROJECTS / "poetryproj" / "pyproject.toml", project_install_mode="install_project"
        )
    )
    assert run_in(full, "python -c 'import poetryproj; print(poetryproj.GREETING)'").strip() == (
        "hello from poetryproj"
    )


def test_uv_script_dependencies_and_script() -> None:
    image = Image.from_uv_script(PROJECTS / "tool.py", name="fi-test-tool", python_version=(3, 11))
    out = run_in(build(image), "python tool.py")
    assert out.strip() == "tool sees six 1.16.0"


def test_from_base_installs_into_the_base_python() -> None:
    image = Image.from_base(BASE_IMAGE).clone(name="fi-test-frombase").with_pip_packages("six==1.16.0")
    out = run_in(build(image), "python3 -c 'import six, sys; print(six.__version__, sys.prefix)'")
    assert out.split() == ["1.16.0", "/usr"]


def test_secrets_are_readable_in_their_step_and_nowhere_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    value = "s3cr3t-VALUE-4242"
    monkeypatch.setenv("BUILD_TOKEN", value)
    (tmp_path / "file-secret").write_text(value + "-file")
    monkeypatch.setenv("CORP_CONF_FILE", str(tmp_path / "file-secret"))
    image = (
        Image.from_base(BUSYBOX)
        .clone(name="fi-test-secret")
        .with_commands(
            [
                'printf %s "$BUILD_TOKEN" | sha256sum > /token-hash',
                f'sha256sum < /etc/corp.conf > /file-hash && echo "leak: $BUILD_TOKEN" # {uuid.uuid4()}',
            ],
            secret_mounts=[Secret("build-token"), Secret("conf", group="corp", mount=Path("/etc/corp.conf"))],
        )
    )
    result = flyte_images.build(image, force=True)  # progress goes to stderr: it must be redacted
    # (the uuid makes the step new: BuildKit's cache does not depend on secret values)
    logs = capfd.readouterr()
    hashes = run_in(result, "cat /token-hash /file-hash").split()
    assert hashes[0] == hashlib.sha256(value.encode()).hexdigest()
    assert hashes[2] == hashlib.sha256((value + "-file").encode()).hexdigest()
    assert "leak: ***" in logs.err and value not in logs.err + logs.out
    saved = _save(result)
    assert value.encode() not in saved and b"leak" in saved  # the step's text is there, the value is not
    assert "No such file" in run_in(result, "ls /etc/corp.conf 2>&1 || true")


def _save(uri: str) -> bytes:
    import subprocess

    raw = subprocess.run(["docker", "save", uri], capture_output=True, check=True).stdout
    blobs = [raw]
    with tarfile.open(fileobj=io.BytesIO(raw)) as outer:
        for member in outer.getmembers():
            if member.isfile() and member.name.endswith(".tar"):
                data = outer.extractfile(member)
                assert data is not None
                blobs.append(data.read())
    return b"".join(blobs)


def test_a_missing_secret_is_named_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    image = Image.from_base(BUSYBOX).clone(name="fi-test-nosecret").with_commands(["true"], secret_mounts="nope-token")
    with pytest.raises(SecretNotFoundError, match="NOPE_TOKEN"):
        flyte_images.build(image, force=True, quiet=True)


def test_push_then_pull_and_run(local_registry: str) -> None:
    image = (
        Image.from_base(BUSYBOX)
        .clone(name="fi-test-push", registry=local_registry)
        .with_commands(["echo pushed > /marker"])
    )
    result = flyte_images.build(image, force=True, quiet=True)
    assert result.uri.startswith(f"{local_registry}/fi-test-push:") and result.digest
    assert result.digest.startswith("sha256:")
    remove_image(result.uri)
    docker("pull", result.uri)
    assert run_in(result.uri, "cat /marker").strip() == "pushed"


def test_unchanged_rebuild_runs_nothing_and_one_changed_file_reruns_only_later_steps(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "first.txt").write_text("1")
    (tmp_path / "second.txt").write_text("2")
    image = (
        Image.from_base(BUSYBOX)
        .clone(name="fi-test-cache")
        .with_commands(["echo early > /early"])
        .with_source_file(tmp_path / "first.txt", dst="/data")
        .with_commands(["cat /data/first.txt > /after-first"])
        .with_source_file(tmp_path / "second.txt", dst="/data")
        .with_commands(["cat /data/second.txt > /after-second"])
    )
    flyte_images.build(image, force=True)
    capfd.readouterr()
    flyte_images.build(image, force=True)
    steps = _steps(capfd.readouterr().err)
    assert steps and all(cached for _, cached in steps), steps
    (tmp_path / "second.txt").write_text(f"changed {uuid.uuid4()}")  # never built before
    flyte_images.build(image, force=True)
    steps = _steps(capfd.readouterr().err)
    rerun = [title for title, cached in steps if not cached]
    assert [t for t in rerun if "RUN" in t] == [t for t in rerun if "after-second" in t]
    assert any("second.txt" in t for t in rerun) and not any("first.txt" in t for t in rerun)


def _steps(log: str) -> list[tuple[str, bool]]:
    """(title, cached) of every COPY/RUN step in a plain BuildKit log."""
    titles: dict[str, str] = {}
    cached: set[str] = set()
    for line in log.splitlines():
        parts = line.split(" ", 1)
        if len(parts) < 2 or not parts[0].startswith("#"):
            continue
        if re.match(r"\[(\S+ )?\d+/\d+\] (RUN|COPY) ", parts[1]):
            titles[parts[0]] = parts[1]
        elif parts[1] == "CACHED":
            cached.add(parts[0])
    return [(title, number in cached) for number, title in titles.items()]


def test_a_failing_step_reports_the_step_exit_code_and_its_last_lines() -> None:
    image = (
        Image.from_base(BUSYBOX)
        .clone(name="fi-test-fail")
        .with_commands(["echo about to fail; echo details >&2; exit 3"])
    )
    with pytest.raises(StepFailedError) as info:
        flyte_images.build(image, force=True, quiet=True)
    assert info.value.exit_code == 3
    assert "about to fail" in info.value.tail and "details" in info.value.tail
    assert "exit 3" in info.value.step
    assert "Traceback" not in str(info.value)


def test_a_base_image_that_cannot_be_pulled_is_named() -> None:
    image = Image.from_base("flyte-images/does-not-exist:1").clone(name="fi-test-nobase").with_commands(["true"])
    with pytest.raises(BaseImageNotFoundError, match="flyte-images/does-not-exist:1") as info:
        flyte_images.build(image, force=True, quiet=True)
    # FLYTE_IMAGES_BASE_IMAGE sets only from_debian_base's base: naming it here would mislead.
    assert "FLYTE_IMAGES_BASE_IMAGE" not in str(info.value)


def test_a_missing_configured_base_names_its_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_BASE_IMAGE", "flyte-images/no-such-python:{python_version}")
    image = Image.from_debian_base(python_version=(3, 11), install_flyte=False, name="fi-test-nobase2")
    with pytest.raises(BaseImageNotFoundError, match=r"no-such-python:3\.11.*point FLYTE_IMAGES_BASE_IMAGE"):
        flyte_images.build(image.with_env_vars({"A": "1"}), force=True, quiet=True)


def test_build_skips_an_image_already_loaded_and_aio_works() -> None:
    import asyncio

    image = Image.from_base(BUSYBOX).clone(name="fi-test-skip").with_commands(["echo once > /once"])
    first = asyncio.run(flyte_images.build.aio(image, quiet=True))
    second = flyte_images.build(image, quiet=True)
    assert second == first and not second.built and "already" in second.reason
    inspect = json.loads(docker("image", "inspect", first).stdout)[0]
    assert inspect["Config"]["Labels"]["dev.flyte-images.identifier"] == image.identifier


def test_cli_build_then_skip(tmp_path: Path) -> None:
    import subprocess
    import sys

    step = f"echo {uuid.uuid4()}"
    (tmp_path / "images.py").write_text(
        "from flyte_images import Image\n"
        f"img = Image.from_base({BUSYBOX!r}).clone(name='fi-test-cli').with_commands([{step!r}])\n"
    )
    command = [sys.executable, "-m", "flyte_images._cli", "build", str(tmp_path / "images.py")]
    first = subprocess.run(command, capture_output=True, text=True, check=True)
    second = subprocess.run(command, capture_output=True, text=True, check=True)
    uri = first.stdout.strip()  # stdout: only the uri, so `uri=$(flyte-images build ...)` works
    assert uri.startswith("fi-test-cli:") and second.stdout.strip() == uri
    assert first.stderr.splitlines()[-1].split()[:3] == ["img", "built", uri]
    assert "[img] building" in first.stderr  # progress: one line per step without a terminal
    assert second.stderr.splitlines()[-1] == f"img  exists     {uri}  (already in the local engine)"
    quiet = subprocess.run([*command, "-q"], capture_output=True, text=True, check=True)
    assert quiet.stdout.strip() == uri and quiet.stderr == ""


@pytest.fixture
def fresh_engine_check(monkeypatch: pytest.MonkeyPatch) -> None:
    import flyte_images.builders.docker as docker_backend

    monkeypatch.setattr(docker_backend, "_checked_engine", False)


@pytest.mark.usefixtures("fresh_engine_check")
def test_no_daemon_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    image = Image.from_base(BUSYBOX).clone(name="fi-test-nodaemon").with_commands(["true"])
    with pytest.raises(EngineUnavailableError, match=r"no Docker daemon at DOCKER_HOST=unix://.*fix DOCKER_HOST"):
        flyte_images.build(image, force=True, quiet=True)


@pytest.mark.usefixtures("fresh_engine_check")
def test_no_buildx_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))  # a config folder without cli-plugins
    if (Path("/usr/libexec/docker/cli-plugins/docker-buildx")).exists():
        pytest.skip("buildx is installed system-wide here, so it cannot be hidden")
    image = Image.from_base(BUSYBOX).clone(name="fi-test-nobuildx").with_commands(["true"])
    with pytest.raises(EngineUnavailableError, match=r"buildx plugin is missing.*docker-buildx"):
        flyte_images.build(image, force=True, quiet=True)


def test_from_dockerfile_builds_the_users_own_folder(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {BUSYBOX}\nCOPY message.txt /message.txt\n")
    (tmp_path / "message.txt").write_text(f"from my dockerfile {uuid.uuid4()}\n")
    (tmp_path / ".dockerignore").write_text("junk\n")
    (tmp_path / "junk").write_text("not sent")
    image = Image.from_dockerfile(tmp_path / "Dockerfile", registry="", name="fi-test-dockerfile")
    uri = build(image)
    assert run_in(uri, "cat /message.txt").startswith("from my dockerfile")
    assert image.identifier in uri


def test_a_local_base_lacking_a_requested_platform_says_what_to_do(local_registry: str) -> None:
    """The local busybox base is amd64 only: building arm64 too needs a multi-platform base in a
    registry (multi-platform builds themselves: test_engine_multiarch.py)."""
    image = Image.from_base(BUSYBOX).clone(name="fi-test-multi", registry=local_registry)
    image = image.with_commands([f"echo {uuid.uuid4()}"]).clone(platform=("linux/amd64", "linux/arm64"))
    with pytest.raises(flyte_images.BaseImageNotFoundError, match=r"for linux/arm64.*platform=\.\.\."):
        flyte_images.build(image, quiet=True)


def test_a_push_that_fails_says_the_image_was_built(engine: None) -> None:
    """Port 9 on loopback has no registry: the build succeeds, the push cannot connect."""
    image = Image.from_base(BUSYBOX).clone(name="fi-test-push-fail", registry="127.0.0.1:9")
    image = image.with_commands([f"echo {uuid.uuid4()}"])
    with pytest.raises(flyte_images.PushFailedError, match=r"^built 127\.0\.0\.1:9/fi-test-push-fail:.*push failed"):
        flyte_images.build(image, quiet=True, require_check=False)
