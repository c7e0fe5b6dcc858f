"""Several platforms on the local Docker engine (dockerd 20.10, classic store, `docker` driver).

That engine cannot build two platforms in one build, so the backend builds each on its own,
pushes it under its own tag and joins them with an image index (builders/_multiarch.py). These
tests build amd64+arm64 images from the same Dockerfile, check the registry sees one image with
both platforms, run each platform, and cut builds short (a failed index PUT, a killed process)
to see the tag reported missing and the next build complete it.

Bases: fixtures/engine/multiarch.sh (run here when it has not been) enables emulation and
creates `flyte-images/busybox:test-arm64` and `python:3.11-slim-bookworm-arm64`. The classic
store keeps one image per tag, so each amd64/arm64 pair is pushed to the loopback registry and
joined into one index there; the images here are built FROM that registry reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import runpy
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from engine_support import BASE_IMAGE, BUSYBOX, docker

import flyte_images
from flyte_images import Image
from flyte_images._registry import Existence, check_many, platform_reference, push_index
from flyte_images.builders import _multiarch as multiarch
from flyte_images.builders import docker as docker_backend
from flyte_images.builders.base import BuildRequest, BuildResult, Progress

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "fixtures" / "engine" / "multiarch.sh"
BOTH = ("linux/amd64", "linux/arm64")
BUSYBOX_ARM64 = "flyte-images/busybox:test-arm64"
PYTHON_ARM64 = "python:3.11-slim-bookworm-arm64"
INDEX_ACCEPT = "application/vnd.oci.image.index.v1+json"


def _arm64(image: str) -> bool:
    found = docker("image", "inspect", "--format", "{{.Architecture}}", image, check=False)
    return found.returncode == 0 and found.stdout.strip() == "arm64"


@pytest.fixture(scope="session")
def emulation(engine: None) -> None:
    """binfmt_misc with QEMU and the arm64 bases, from multiarch.sh when they are not there yet."""
    if multiarch.binfmt_problem("linux/arm64") is None and _arm64(BUSYBOX_ARM64) and _arm64(PYTHON_ARM64):
        return
    if os.geteuid() != 0:
        why = "multiarch.sh must run as root to enable emulation; run `sudo bash fixtures/engine/multiarch.sh`"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=False, timeout=1500)
    assert done.returncode == 0, f"multiarch.sh failed:\n{done.stderr[-3000:]}"


def _push_pair(registry: str, repository: str, amd64: str, arm64: str) -> str:
    parts = {}
    for platform, local in (("linux/amd64", amd64), ("linux/arm64", arm64)):
        ref = f"{registry}/{repository}:{platform.split('/')[1]}"
        docker("tag", local, ref)
        docker("push", ref)
        parts[platform] = ref
    joined = f"{registry}/{repository}:test"
    asyncio.run(push_index(joined, parts))
    return joined


@pytest.fixture(scope="session")
def busybox_both(emulation: None, local_registry: str) -> str:
    """REG/fi-bases/busybox:test, an index of the amd64 and the arm64 busybox."""
    return _push_pair(local_registry, "fi-bases/busybox", BUSYBOX, BUSYBOX_ARM64)


@pytest.fixture(scope="session")
def python_both(emulation: None, local_registry: str) -> str:
    """REG/fi-bases/python:test, an index of the amd64 and the arm64 Debian python base."""
    return _push_pair(local_registry, "fi-bases/python", BASE_IMAGE, PYTHON_ARM64)


@pytest.fixture
def counted_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The platforms the Docker backend really ran a build for, in order."""
    seen: list[str] = []
    real = docker_backend.run_build

    def counting(request: BuildRequest, progress: Progress, runs: multiarch.Runs | None = None) -> BuildResult:
        seen.extend(request.platforms)
        return real(request, progress, runs)

    monkeypatch.setattr(docker_backend, "run_build", counting)
    return seen


def busybox_image(base: str, registry: str, tmp_path: Path, name: str, *commands: str) -> Image:
    tree = tmp_path / "src"
    tree.mkdir(exist_ok=True)
    # A new file name on every run: BuildKit sends a staged file again only when its size or time
    # changed, and staging fixes every time, so a same-size edit of one path is not re-sent.
    marker = uuid.uuid4().hex
    (tree / f"hello-{marker}.txt").write_text(f"hello {marker}\n")
    return (
        Image.from_base(base)
        .clone(name=f"fi-multi-{name}", registry=registry, platform=BOTH)
        .with_source_folder(tree, dst="/srv")
        .with_commands(["uname -m > /arch", *commands])
    )


def check_both(uri: str) -> Existence:
    (found,) = asyncio.run(check_many([uri], BOTH))
    return found


def run_on(platform: str, uri: str, *command: str) -> str:
    docker("image", "rm", "-f", uri, check=False)  # one image per tag here: fetch this platform's
    docker("pull", "--platform", platform, uri)
    done = docker("run", "--rm", "--platform", platform, uri, *command, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_this_engine_builds_one_platform_at_a_time() -> None:
    facts = multiarch.engine_facts()
    assert facts.driver == "docker" and not facts.containerd_store and not facts.builds_several
    assert facts.platform == "linux/amd64" and facts.local


def test_two_platforms_become_one_index_that_runs_on_each(
    busybox_both: str, local_registry: str, tmp_path: Path
) -> None:
    image = busybox_image(busybox_both, local_registry, tmp_path, "src")
    built = flyte_images.build(image, quiet=True)
    assert built.built and built.digest
    found = check_both(built.uri)
    assert found.state == "exists" and found.platforms == BOTH and found.digest == built.digest
    repository, tag = built.uri.split("/", 1)[1].rsplit(":", 1)
    index = httpx.get(f"http://{local_registry}/v2/{repository}/manifests/{tag}", headers={"Accept": INDEX_ACCEPT})
    assert index.headers["Content-Type"] == INDEX_ACCEPT
    assert [m["platform"]["architecture"] for m in index.json()["manifests"]] == ["amd64", "arm64"]
    assert run_on("linux/arm64", built.uri, "uname", "-m") == "aarch64"
    assert run_on("linux/arm64", built.uri, "cat", "/arch") == "aarch64"  # the RUN step ran emulated
    assert run_on("linux/amd64", built.uri, "uname", "-m") == "x86_64"
    (hello,) = (tmp_path / "src").glob("hello-*.txt")
    assert run_on("linux/amd64", built.uri, "cat", f"/srv/src/{hello.name}") == hello.read_text().strip()
    again = flyte_images.build(image, quiet=True)
    assert not again.built and "linux/amd64, linux/arm64" in again.reason


def test_pip_packages_on_both_platforms(python_both: str, local_registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_BASE_IMAGE", python_both)
    image = Image.from_debian_base(
        python_version=(3, 11), install_flyte=False, registry=local_registry, name="fi-multi-pip", platform=BOTH
    ).with_pip_packages("six==1.16.0")
    built = flyte_images.build(image, force=True, quiet=True)
    assert check_both(built.uri).exists
    script = "import platform, six; print(platform.machine(), six.__version__)"
    assert run_on("linux/arm64", built.uri, "python", "-c", script) == "aarch64 1.16.0"
    assert run_on("linux/amd64", built.uri, "python", "-c", script) == "x86_64 1.16.0"


def failing_index_put(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every index PUT is answered 503 (as by a registry going away) until the patch is undone."""
    real = push_index

    class Refuse(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "PUT" and "/manifests/" in request.url.path:
                return httpx.Response(503, json={"errors": [{"code": "UNAVAILABLE", "message": "simulated outage"}]})
            return await super().handle_async_request(request)

    async def refused(reference: str, parts: dict[str, str], **options: object) -> str:
        return await real(reference, parts, transport=Refuse(), **options)  # type: ignore[arg-type]

    monkeypatch.setattr(flyte_images._registry, "push_index", refused)


def test_a_failed_index_put_is_missing_then_completed_without_rebuilding(
    busybox_both: str, local_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted_builds: list[str]
) -> None:
    image = busybox_image(busybox_both, local_registry, tmp_path, "put")
    with monkeypatch.context() as patch:
        failing_index_put(patch)
        with pytest.raises(flyte_images.PartialPushError, match="build again to complete it") as failed:
            flyte_images.build(image, quiet=True)
    assert sorted(failed.value.pushed) == list(BOTH) and "simulated outage" in str(failed.value)
    uri = flyte_images.build(image, dry_run=True).uri
    assert counted_builds == list(BOTH)
    interrupted = check_both(uri)
    assert interrupted.state == "missing" and "only per-platform images were pushed" in interrupted.reason
    completed = flyte_images.build(image, quiet=True)
    assert completed.built and counted_builds == list(BOTH), "the pushed platforms are reused, not rebuilt"
    assert check_both(uri).exists
    assert run_on("linux/arm64", uri, "cat", "/arch") == "aarch64"


def test_an_index_lacking_a_platform_is_missing_then_completed(
    busybox_both: str, local_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted_builds: list[str]
) -> None:
    image = busybox_image(busybox_both, local_registry, tmp_path, "lacking")
    uri = flyte_images.build(image, dry_run=True).uri
    with monkeypatch.context() as patch, pytest.raises(flyte_images.PartialPushError):
        failing_index_put(patch)
        flyte_images.build(image, quiet=True)
    # An index under the tag that lacks arm64 (as another tool, or an older flyte-images, may
    # leave); written after a failed build, since a push this machine completed moments ago is
    # believed over a registry's "missing" (flyte_images._skip).
    asyncio.run(push_index(uri, {"linux/amd64": platform_reference(uri, "linux/amd64")}))
    lacking = check_both(uri)
    assert lacking.state == "missing" and "not for linux/arm64" in lacking.reason
    rebuilt = flyte_images.build(image, quiet=True)
    assert rebuilt.built and counted_builds == list(BOTH), "completed from the pushed platforms"
    assert check_both(uri).exists


KILLED_BUILD = """
import sys
import flyte_images
from flyte_images import Image
image = (Image.from_base(sys.argv[1]).clone(name="fi-multi-killed", registry=sys.argv[2], platform={both!r})
         .with_commands(["uname -m > /arch", "echo {marker} > /marker", "sleep 4"]))
if __name__ == "__main__":
    flyte_images.build(image, quiet=True)
"""


def test_a_build_killed_after_the_first_platform_is_missing_then_completed(
    busybox_both: str, local_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counted_builds: list[str]
) -> None:
    script = tmp_path / "build.py"
    script.write_text(KILLED_BUILD.format(both=BOTH, marker=uuid.uuid4()))
    monkeypatch.setattr(sys, "argv", [str(script), busybox_both, local_registry])
    image = runpy.run_path(str(script), run_name="image")["image"]
    uri = flyte_images.build(image, dry_run=True).uri
    monkeypatch.setenv(multiarch.CONCURRENCY_ENV, "1")  # amd64 first, then arm64: killed in between
    process = subprocess.Popen([sys.executable, *sys.argv], start_new_session=True, stderr=subprocess.PIPE)
    first = platform_reference(uri, "linux/amd64").split("/", 1)[1].replace(":", "/manifests/", 1)
    try:
        deadline = time.monotonic() + 300
        while httpx.head(f"http://{local_registry}/v2/{first}").status_code != 200:
            assert process.poll() is None, f"the build ended before it was killed: {process.communicate()[1]!r}"
            assert time.monotonic() < deadline, "linux/amd64 was never pushed"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the build and its docker buildx child, at once
        process.communicate()
    killed = check_both(uri)
    assert killed.state == "missing" and "only per-platform images were pushed (linux/amd64)" in killed.reason
    resumed = flyte_images.build(image, quiet=True)
    assert resumed.built and counted_builds == ["linux/arm64"], "linux/amd64 is reused, only linux/arm64 is built"
    assert check_both(uri).exists
    assert run_on("linux/arm64", uri, "cat", "/arch") == "aarch64"
    assert run_on("linux/amd64", uri, "cat", "/arch") == "x86_64"


def test_loading_several_platforms_loads_the_engines_own(tmp_path: Path) -> None:
    image = Image.from_base(BUSYBOX).clone(name="fi-multi-load", platform=BOTH).with_commands([f"echo {uuid.uuid4()}"])
    with pytest.warns(UserWarning, match=r"loading linux/amd64 only; not loaded: linux/arm64"):
        built = flyte_images.build(image, quiet=True)
    found = json.loads(docker("image", "inspect", built.uri).stdout)[0]
    assert found["Architecture"] == "amd64"


# ----- emulation: found missing before anything is built -----------------------------------------


@pytest.fixture
def binfmt(tmp_path: Path) -> Path:
    folder = tmp_path / "binfmt_misc"
    folder.mkdir()
    return folder


def handler(folder: Path, name: str, flags: str = "PF", state: str = "enabled") -> None:
    (folder / "status").write_text("enabled\n")
    (folder / name).write_text(
        f"{state}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\noffset 0\nmagic 7f454c46\n"
    )


def test_binfmt_states_are_told_apart(binfmt: Path) -> None:
    assert "not mounted" in (multiarch.binfmt_problem("linux/arm64", binfmt) or "")
    (binfmt / "status").write_text("enabled\n")
    assert "no binfmt_misc handler for aarch64" in (multiarch.binfmt_problem("linux/arm64", binfmt) or "")
    handler(binfmt, "qemu-aarch64", flags="P")
    assert "F (fix-binary)" in (multiarch.binfmt_problem("linux/arm64", binfmt) or "")
    handler(binfmt, "qemu-aarch64", state="disabled")
    assert "disabled" in (multiarch.binfmt_problem("linux/arm64", binfmt) or "")
    handler(binfmt, "qemu-aarch64")
    assert multiarch.binfmt_problem("linux/arm64", binfmt) is None
    assert "qemu-riscv64" in (multiarch.binfmt_problem("linux/riscv64", binfmt) or "")


def test_missing_emulation_is_a_typed_error_before_any_build(
    tmp_path: Path, local_registry: str, binfmt: Path, monkeypatch: pytest.MonkeyPatch, counted_builds: list[str]
) -> None:
    monkeypatch.setattr(multiarch, "BINFMT_DIR", binfmt)  # as on a machine where it is not mounted
    image = Image.from_base(BUSYBOX).clone(name="fi-multi-noemu", registry=local_registry, platform=BOTH)
    with pytest.raises(flyte_images.EmulationUnavailableError) as raised:
        flyte_images.build(image.with_commands(["true"]), quiet=True)
    message = str(raised.value)
    assert "linux/arm64" in message and "apt-get install qemu-user-static binfmt-support" in message
    assert "mount -t binfmt_misc" in message and "update-binfmts --enable" in message and "Docker Desktop" in message
    assert counted_builds == []
    # Loaded locally, only the engine's own platform is built: it needs no emulator.
    with pytest.warns(UserWarning, match="not loaded: linux/arm64"):
        flyte_images.build(image.clone(registry="").with_commands([f"echo {uuid.uuid4()}"]), quiet=True)
    assert counted_builds == ["linux/amd64"]
    # Without a RUN step nothing has to execute: no emulator needed.
    copy_only = Image.from_base(BUSYBOX).clone(name="fi-multi-copy", platform=("linux/arm64",))
    copy_only = copy_only.with_source_file(Path(__file__), dst="/t")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(flyte_images.build(copy_only, dry_run=True).dockerfile)
    request = BuildRequest(context=tmp_path, dockerfile=dockerfile, tags=("x",), platforms=("linux/arm64",), push=False)
    multiarch.check_emulation(request, multiarch.engine_facts())


def test_platform_concurrency_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert multiarch.concurrency_setting() == 2
    monkeypatch.setenv(multiarch.CONCURRENCY_ENV, "3")
    assert multiarch.concurrency_setting() == 3 and multiarch.concurrency_setting(1) == 1
    monkeypatch.setenv(multiarch.CONCURRENCY_ENV, "0")
    with pytest.raises(flyte_images._errors.ConfigError, match="FLYTE_IMAGES_PLATFORM_CONCURRENCY='0'"):
        multiarch.concurrency_setting()


# ----- push_index: never lists what it cannot confirm ----------------------------------------------


def test_push_index_refuses_a_platform_the_image_is_not_for(busybox_both: str, local_registry: str) -> None:
    amd64 = f"{local_registry}/fi-bases/busybox:amd64"
    with pytest.raises(flyte_images._errors.RegistryError, match="is an image for linux/amd64, not for linux/arm64"):
        asyncio.run(push_index(f"{local_registry}/fi-bases/busybox:wrong", {"linux/arm64": amd64}))
    with pytest.raises(flyte_images._errors.RegistryError, match="its own repository"):
        asyncio.run(push_index(f"{local_registry}/elsewhere/app:1", {"linux/amd64": amd64}))
    with pytest.raises(flyte_images._errors.RegistryError, match="is not in the registry"):
        missing = f"{local_registry}/fi-bases/busybox:never-pushed"
        asyncio.run(push_index(f"{local_registry}/fi-bases/busybox:none", {"linux/amd64": missing}))
    found = check_both(f"{local_registry}/fi-bases/busybox:wrong")
    assert found.state == "missing"
