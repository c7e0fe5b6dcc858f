"""The buildkit backend on a real buildkitd (fixtures/engine/buildkit.sh): over a unix socket and
over TCP with mutual TLS, several platforms in one index, a registry layer cache that outlives
the daemon's state, typed errors for what cannot work, and backends found by name as plugins.

The shared daemon pulls base images from a registry it uses as its docker.io mirror (the script
seeds it), since it cannot see the Docker engine's images; tests that stop or wipe a daemon
start their own on a private socket, from the same binary and configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from backend_support import BuildkitDaemon, PrivateDaemon, require_buildkit, self_signed
from engine_support import BASE_IMAGE, BUSYBOX, docker, free_port, remove_image
from registry_support import basic_registry

import flyte_images
from flyte_images import _config
from flyte_images._build import backends as _builders
from flyte_images._errors import (
    BaseImageNotFoundError,
    BuilderTLSError,
    ConfigError,
    EngineUnavailableError,
    PlatformNotSupportedError,
    PushDeniedError,
)
from flyte_images.builders.base import Builder, BuildRequest, BuildResult, Progress, ProgressEvent, registry_cache_specs
from flyte_images.builders.buildkit import BuildkitBuilder, builder_name, check_settings
from flyte_images.testing import FakeBuilder

pytestmark = pytest.mark.engine
_OUTPUT = re.compile(r"^#\d+ \d+\.\d+ ")  # "#9 0.217 text": a line a step's command printed
INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="session")
def buildkitd(engine: None) -> BuildkitDaemon:
    return require_buildkit()


class Recording:
    """A backend that records every progress event of the backend it wraps."""

    name: ClassVar[str] = "recording"

    def __init__(self, inner: Builder) -> None:
        self.inner = inner
        self.events: list[ProgressEvent] = []
        self.exports_cache = inner.exports_cache
        self.multi_platform = inner.multi_platform
        self.loads = inner.loads

    def local_exists(self, reference: str) -> bool | None:
        return self.inner.local_exists(reference)

    def build(self, request: BuildRequest, progress: Progress) -> BuildResult:
        def record(event: ProgressEvent) -> None:
            self.events.append(event)
            progress(event)

        return self.inner.build(request, record)

    def outcomes(self, title_part: str) -> list[str]:
        """For each step whose title has `title_part`, as BuildKit's progress tells it:
        "cached" (CACHED), "ran" (its command printed output), else "done" (a COPY, or a cached
        step whose layers BuildKit first fetched from an imported cache, then said DONE)."""
        titles = [e.step for e in self.events if e.kind == "step" and title_part in e.step]
        outcomes = []
        for title in titles:
            lines = [e for e in self.events if e.kind == "log" and e.step == title]
            if any(e.text == "CACHED" for e in lines):
                outcomes.append("cached")
            else:
                outcomes.append("ran" if any(_OUTPUT.match(e.line) for e in lines) else "done")
        return outcomes


def _layers_and_config(uri: str) -> bytes:
    """Everything `docker save` writes for an image: its config and every layer, concatenated."""
    saved = subprocess.run(["docker", "save", uri], capture_output=True, check=True, timeout=300).stdout
    return saved


# ----- end to end: unix socket and TCP with mutual TLS ------------------------------------------


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_build_push_pull_run_with_a_secret(
    transport: str,
    buildkitd: BuildkitDaemon,
    local_registry: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    buildkitd.use(monkeypatch, tcp=transport == "tcp")
    value = f"bk-{transport}-{uuid.uuid4().hex}"
    monkeypatch.setenv("BUILD_TOKEN", value)
    (tmp_path / "app.py").write_text(f"import six\nprint('hello over {transport}', six.__version__)\n")
    image = (
        flyte_images.Image.from_base(BASE_IMAGE)
        .clone(name=f"fi-bk-e2e-{transport}", registry=local_registry)
        .with_pip_packages("six==1.16.0")
        .with_commands(
            [f'printf %s "$BUILD_TOKEN" | sha256sum > /token-hash && echo "leak: $BUILD_TOKEN" # {uuid.uuid4()}'],
            secret_mounts=[flyte_images.Secret("build-token")],
        )
        .with_source_file(tmp_path / "app.py", dst="/srv")
    )
    result = flyte_images.build(image, force=True, builder="buildkit")  # progress to stderr, redacted
    logs = capfd.readouterr()

    assert result.built and result.digest and result.uri.startswith(f"{local_registry}/fi-bk-e2e-{transport}:")
    remove_image(result.uri)
    try:
        docker("pull", result.uri)
        out = docker("run", "--rm", result.uri, "sh", "-c", "python3 /srv/app.py; cat /token-hash").stdout
        assert out.splitlines()[0] == f"hello over {transport} 1.16.0"
        assert out.split()[-2] == hashlib.sha256(value.encode()).hexdigest()
        assert "leak: ***" in logs.err and value not in logs.err + logs.out
        saved = _layers_and_config(result.uri)
        assert value.encode() not in saved and b"leak: $BUILD_TOKEN" in saved  # the step's text is there
        assert "No such file" in docker("run", "--rm", result.uri, "sh", "-c", "ls /run/secrets/* 2>&1 || true").stdout
    finally:
        remove_image(result.uri)


def test_load_into_the_local_engine_through_the_cli(
    buildkitd: BuildkitDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flyte_images._cli import main

    buildkitd.use(monkeypatch, tcp=True)
    marker = uuid.uuid4().hex
    (tmp_path / "images.py").write_text(
        "from flyte_images import Image\n"
        f"app = Image.from_base({BUSYBOX!r}).clone(name='fi-bk-cli').with_commands(['echo {marker} > /marker'])\n"
    )
    assert main(["build", str(tmp_path / "images.py"), "--builder", "buildkit", "--quiet"]) == 0
    image = flyte_images.Image.from_base(BUSYBOX).clone(name="fi-bk-cli").with_commands([f"echo {marker} > /marker"])
    try:
        assert docker("run", "--rm", image.uri, "cat", "/marker").stdout.strip() == marker
    finally:
        remove_image(image.uri)


# ----- several platforms: one solve, one index ---------------------------------------------------


def test_two_platforms_are_one_index_and_a_second_build_does_nothing(
    buildkitd: BuildkitDaemon, local_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    buildkitd.use(monkeypatch)
    image = (
        flyte_images.Image.from_base(BUSYBOX)
        .clone(name="fi-bk-multi", registry=local_registry)
        .with_commands(["uname -m > /arch"])
    )
    both = ("linux/amd64", "linux/arm64")
    result = flyte_images.build(image, platform=both, builder="buildkit", quiet=True)
    amd64_only = flyte_images.build(image, platform="linux/amd64", builder="buildkit", quiet=True)

    assert result.built and amd64_only.built and result.uri != amd64_only.uri
    repository, tag = result.uri.split("/", 1)[1].rsplit(":", 1)
    answer = httpx.get(f"http://{local_registry}/v2/{repository}/manifests/{tag}", headers={"Accept": INDEX})
    index = answer.json()
    assert index["mediaType"] == INDEX and answer.headers["Docker-Content-Digest"] == result.digest
    platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]}
    assert platforms == set(both)  # and nothing else: no attestation manifests
    try:
        arm = docker("run", "--rm", "--platform", "linux/arm64", result.uri, "sh", "-c", "uname -m; cat /arch").stdout
        assert arm.split() == ["aarch64", "aarch64"]
    finally:
        remove_image(result.uri)

    again = flyte_images.build(image, platform=both, builder="buildkit", quiet=True)
    assert not again.built and again.uri == result.uri


def test_pushing_needs_no_docker_daemon(
    buildkitd: BuildkitDaemon, local_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buildkitd.use(monkeypatch, tcp=True)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker-daemon.sock")  # a CI job without one
    context, dockerfile = _stage(tmp_path, f"FROM {BUSYBOX}\nRUN echo {uuid.uuid4().hex} > /x\n")
    reference = f"{local_registry}/fi-bk-nodaemon:{uuid.uuid4().hex[:12]}"
    result = BuildkitBuilder().build(BuildRequest(context, dockerfile, (reference,), (), True), lambda event: None)

    repository, tag = reference.split("/", 1)[1].rsplit(":", 1)
    answer = httpx.head(f"http://{local_registry}/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert answer.headers["Docker-Content-Digest"] == result.digest
    assert BuildkitBuilder().local_exists(reference) is None  # no engine to ask


def test_a_base_without_the_platform_is_named(buildkitd: BuildkitDaemon, tmp_path: Path) -> None:
    context, dockerfile = _stage(tmp_path, f"FROM {BUSYBOX}\nRUN true\n")
    request = BuildRequest(context, dockerfile, (f"fi-bk-s390x:{uuid.uuid4().hex[:8]}",), ("linux/s390x",), False)
    with pytest.raises(BaseImageNotFoundError, match=r"busybox:test has no variant for linux/s390x"):
        BuildkitBuilder(buildkitd.settings()).build(request, lambda event: None)


def test_a_platform_the_daemon_cannot_run_says_how_to_add_emulation(buildkitd: BuildkitDaemon, tmp_path: Path) -> None:
    # This machine has QEMU for every platform BuildKit knows, so a missing emulator is shown as
    # the kernel reports it: a program no binfmt_misc handler takes (an ELF for machine 0x1234)
    # fails to start with "exec format error", exactly as an arm64 one does without QEMU.
    header = struct.pack("<HHIQQQIHHHHHH", 2, 0x1234, 1, 0x400078, 64, 0, 0, 64, 56, 0, 0, 0, 0)
    context, dockerfile = _stage(tmp_path, 'FROM scratch\nCOPY alien /alien\nRUN ["/alien"]\n')
    (context / "alien").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(8) + header)
    (context / "alien").chmod(0o755)
    request = BuildRequest(context, dockerfile, (f"fi-bk-alien:{uuid.uuid4().hex[:8]}",), ("linux/arm64",), False)
    with pytest.raises(PlatformNotSupportedError) as failed:
        BuildkitBuilder(buildkitd.settings()).build(request, lambda event: None)
    message = str(failed.value)
    assert "linux/arm64" in message and "exec format error" in message
    assert "qemu-user-static" in message and "binfmt_misc" in message
    assert failed.value.step.endswith('RUN ["/alien"]')


# ----- the registry layer cache -----------------------------------------------------------------


@pytest.fixture
def private_daemon(buildkitd: BuildkitDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateDaemon]:
    daemon = PrivateDaemon(buildkitd, tmp_path_factory.mktemp("buildkitd"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        # buildx keeps a builder per address; this socket is never used again.
        name = builder_name(_config.BuildkitSettings(daemon.addr))
        subprocess.run(["docker", "buildx", "rm", name], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            shutil.rmtree(daemon.home)


def test_registry_cache_outlives_a_wiped_daemon(
    private_daemon: PrivateDaemon, local_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_ADDR", private_daemon.addr)
    source = tmp_path / "app.py"
    source.write_text("print('v1')\n")
    image = (
        flyte_images.Image.from_base(BASE_IMAGE)
        .clone(name="fi-bk-cache", registry=local_registry)
        .with_pip_packages("six==1.16.0")
        .with_commands([f"echo deps-ran-{uuid.uuid4().hex} | tee /deps"])  # a step no earlier run cached
        .with_source_file(source, dst="/srv")
    )
    cache_from, cache_to = registry_cache_specs(f"{local_registry}/fi-bk-cache")
    recording = Recording(BuildkitBuilder())
    first = flyte_images.build(image, builder=recording, cache_from=cache_from, cache_to=cache_to, quiet=True)
    assert first.built
    assert recording.outcomes("uv pip install") == ["ran"] and recording.outcomes("echo deps-ran") == ["ran"]

    private_daemon.wipe()
    assert private_daemon.records() == []
    source.write_text("print('v2')\n")
    recording.events.clear()
    second = flyte_images.build(image, builder=recording, cache_from=cache_from, cache_to=cache_to, quiet=True)

    assert second.built and second.uri != first.uri
    # No dependency step ran again: each is CACHED, or DONE once BuildKit fetched its layers from
    # the registry cache because a later step needed them (it then prints the blobs it pulls,
    # never the command's output). The changed source was copied anew.
    progress = "\n".join(e.line for e in recording.events)
    assert "importing cache manifest from" in progress and "deps-ran-" not in progress.replace("echo deps-ran-", "")
    # uv's stage is not run again: CACHED, or not even evaluated when every step mounting it is
    assert recording.outcomes("_fi/uv/") in ([], ["cached"])
    assert recording.outcomes("uv pip install")[0] in {"cached", "done"}
    assert recording.outcomes("echo deps-ran")[0] in {"cached", "done"}
    assert "cached" in recording.outcomes("uv pip install") + recording.outcomes("echo deps-ran")
    assert recording.outcomes("/srv/") == ["done"]


def test_registry_cache_specs() -> None:
    cache_from, cache_to = registry_cache_specs("ghcr.io/acme/trainer")
    assert cache_from == ("type=registry,ref=ghcr.io/acme/trainer:buildcache",)
    assert cache_to[0].startswith("type=registry,ref=ghcr.io/acme/trainer:buildcache,mode=max")
    assert registry_cache_specs("localhost:5000/team/app", tag="cache")[0] == (
        "type=registry,ref=localhost:5000/team/app:cache",
    )
    for wrong in ["ghcr.io/acme/trainer:v1", "ghcr.io/acme/trainer@sha256:" + "0" * 64, ""]:
        with pytest.raises(ConfigError, match="not a repository"):
            registry_cache_specs(wrong)


# ----- typed errors -------------------------------------------------------------------------------


def _stage(root: Path, dockerfile: str) -> tuple[Path, Path]:
    (root / "context").mkdir(exist_ok=True)
    (root / "Dockerfile").write_text(dockerfile)
    return root / "context", root / "Dockerfile"


def _build_busybox(tmp_path: Path) -> None:
    image = flyte_images.Image.from_base(BUSYBOX).clone(name="fi-bk-err").with_commands([f"echo {uuid.uuid4()}"])
    started = time.monotonic()
    try:
        flyte_images.build(image, force=True, builder="buildkit", quiet=True)
    finally:
        # Said at once, not after buildx's silent 20 s wait for a connection.
        assert time.monotonic() - started < 15


def test_a_wrong_client_certificate_is_a_tls_error(
    buildkitd: BuildkitDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buildkitd.use(monkeypatch, tcp=True)
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_CERT", str(cert))
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_KEY", str(key))
    with pytest.raises(BuilderTLSError, match=f"refused the client certificate {cert}"):
        _build_busybox(tmp_path)

    monkeypatch.delenv("FLYTE_IMAGES_BUILDKIT_CERT")
    monkeypatch.delenv("FLYTE_IMAGES_BUILDKIT_KEY")
    with pytest.raises(BuilderTLSError, match="requires a client certificate"):
        _build_busybox(tmp_path)


def test_a_wrong_ca_or_server_name_is_a_tls_error(
    buildkitd: BuildkitDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buildkitd.use(monkeypatch, tcp=True)
    other_ca, _ = self_signed(tmp_path)
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_CA", str(other_ca))
    with pytest.raises(BuilderTLSError, match=f"not trusted by {other_ca}"):
        _build_busybox(tmp_path)

    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_CA", str(tmp_path / "garbage.pem"))
    with pytest.raises(ConfigError, match=r"garbage\.pem, which cannot be read as PEM CA certificates"):
        _build_busybox(tmp_path)

    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_CA", buildkitd.ca)
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_SERVER_NAME", "someone-else.test")
    with pytest.raises(BuilderTLSError, match="FLYTE_IMAGES_BUILDKIT_SERVER_NAME"):
        _build_busybox(tmp_path)

    for name in ("CA", "CERT", "KEY", "SERVER_NAME"):  # TLS daemon, plain client
        monkeypatch.delenv(f"FLYTE_IMAGES_BUILDKIT_{name}")
    with pytest.raises(BuilderTLSError, match="serves TLS only"):
        _build_busybox(tmp_path)


def test_an_unreachable_address_is_engine_unavailable(
    buildkitd: BuildkitDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_ADDR", f"tcp://127.0.0.1:{free_port()}")
    with pytest.raises(EngineUnavailableError, match=r"cannot reach buildkitd at tcp://127\.0\.0\.1:") as refused:
        _build_busybox(tmp_path)
    assert not isinstance(refused.value, BuilderTLSError)

    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_ADDR", f"unix://{tmp_path}/no-daemon.sock")
    with pytest.raises(EngineUnavailableError, match="there is no socket at"):
        _build_busybox(tmp_path)


def test_a_refused_push_is_push_denied(buildkitd: BuildkitDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    buildkitd.use(monkeypatch)
    with basic_registry() as guarded:
        image = flyte_images.Image.from_base(BUSYBOX).clone(name="fi-bk-denied", registry=guarded.host)
        image = image.with_commands([f"echo {uuid.uuid4()}"])
        with pytest.raises(PushDeniedError, match=f"docker login {guarded.host}"):
            flyte_images.build(image, force=True, builder="buildkit", quiet=True, require_check=False)


def test_settings_that_cannot_work_are_config_errors(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("x")
    wrong = [
        (_config.BuildkitSettings("buildkitd:1234"), "has no scheme"),
        (_config.BuildkitSettings("tcp://h:1", cert=str(key)), "FLYTE_IMAGES_BUILDKIT_KEY .* is not"),
        (_config.BuildkitSettings("tcp://h:1", ca=str(tmp_path / "nope.pem")), "nope.pem, which is not a file"),
    ]
    for settings, message in wrong:
        with pytest.raises(ConfigError, match=message):
            check_settings(settings)


# ----- settings and selection ----------------------------------------------------------------------


def test_settings_come_from_the_config_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flyte-images.toml").write_text(
        'image_builder = "buildkit"\n'
        'buildkit_addr = "tcp://buildkitd.ci:1234"\n'
        'buildkit_ca = "/etc/buildkit/ca.pem"\n'
        'buildkit_cert = "/etc/buildkit/cert.pem"\n'
        'buildkit_key = "/etc/buildkit/key.pem"\n'
        'buildkit_server_name = "buildkitd"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert _config.configured_buildkit() == _config.BuildkitSettings(
        "tcp://buildkitd.ci:1234",
        "/etc/buildkit/ca.pem",
        "/etc/buildkit/cert.pem",
        "/etc/buildkit/key.pem",
        "buildkitd",
    )
    assert isinstance(_builders.get_builder(), BuildkitBuilder)
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_ADDR", "unix:///run/other.sock")
    assert _config.configured_buildkit().addr == "unix:///run/other.sock"
    assert _config.configured_buildkit().ca == "/etc/buildkit/ca.pem"  # each key on its own

    (tmp_path / "flyte-images.toml").write_text("buildkit_addr = 1234\n")
    _config.reset()
    with pytest.raises(ConfigError, match="buildkit_addr must be a string"):
        _config.configured_buildkit()


def test_default_address_is_buildkitds_own(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _config.BUILDKIT_KEYS:
        monkeypatch.delenv(f"FLYTE_IMAGES_{name.upper()}", raising=False)
    assert _config.configured_buildkit() == _config.BuildkitSettings("unix:///run/buildkit/buildkitd.sock")


def test_the_buildkit_backend_is_chosen_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "buildkit" in _builders.available_builders()
    assert isinstance(_builders.get_builder("buildkit"), BuildkitBuilder)
    monkeypatch.setenv("FLYTE_IMAGES_BUILDER", "buildkit")
    assert isinstance(_builders.get_builder(), BuildkitBuilder)
    monkeypatch.delenv("FLYTE_IMAGES_BUILDER")
    flyte_images.init(image_builder="buildkit")
    assert isinstance(_builders.get_builder(), BuildkitBuilder)


PLUGIN = '''
from flyte_images.testing import FakeBuilder


class PluginBuilder(FakeBuilder):
    """A third-party backend: the fake, under its own name."""

    name = "test-plugin"
    made = []

    def __init__(self):
        super().__init__()
        PluginBuilder.made.append(self)
'''


def test_a_plugin_package_is_found_by_name_and_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed distribution as importlib.metadata sees one: a package and its dist-info.
    site = tmp_path / "site"
    (site / "fi_test_plugin").mkdir(parents=True)
    (site / "fi_test_plugin" / "__init__.py").write_text(PLUGIN)
    info = site / "fi_test_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fi-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[flyte_images.builders]\ntest-plugin = fi_test_plugin:PluginBuilder\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "fi_test_plugin", raising=False)

    assert "test-plugin" in _builders.available_builders()
    image = flyte_images.Image.from_base(BUSYBOX).clone(name="fi-bk-plugin").with_commands(["echo from a plugin"])
    result = flyte_images.build(image, force=True, builder="test-plugin", quiet=True)

    plugin = sys.modules["fi_test_plugin"].PluginBuilder
    assert result.built and len(plugin.made) == 1
    built: FakeBuilder = plugin.made[0]
    assert result.uri in built.store and built.requests[0].tags == (result.uri,)
    assert json.dumps(dict(built.store[result.uri].labels))  # the identity label came along
