"""The buildkit backend on a pool of three real daemons (tests/pool_support.py): the conformance
suite, an image goes to the same daemon every time, distinct images spread, a node that refuses
TLS is skipped, a daemon that dies during a deploy loses its builds to the others and the
deploy succeeds, a pool no node of which answers fails with every node named, each platform of
a two-platform image is built on a node of that platform with its own registry cache tag, and a
fresh daemon takes each platform's unchanged steps from that tag. Which daemon built what is
read from the daemons' own build history."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from backend_support import BuildkitDaemon, require_buildkit, self_signed
from engine_support import BUSYBOX, docker, free_port
from pool_support import ThreeDaemons, fresh_daemon, three_daemons

import flyte_images
from flyte_images import Image, TaskEnvironment
from flyte_images._errors import ConfigError, EngineUnavailableError
from flyte_images.builders import pool
from flyte_images.builders.base import BuildRequest, BuildResult, Progress, ProgressEvent
from flyte_images.builders.buildkit import BuildkitBuilder
from flyte_images.testing.conformance import Backend, BackendConformance, EngineBackend

pytestmark = pytest.mark.engine


@pytest.fixture(scope="session")
def daemons(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreeDaemons]:
    shared: BuildkitDaemon = require_buildkit()
    with three_daemons(shared, tmp_path_factory.mktemp("pool")) as started:
        yield started


@pytest.fixture
def on_pool(daemons: ThreeDaemons, local_registry: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreeDaemons]:
    """The backend pointed at the pool, with this process's view of the nodes fresh (a new run)."""
    daemons.use(monkeypatch)
    flyte_images.init(image_registry=local_registry)
    pool.POOL.reset()
    yield daemons
    pool.POOL.reset()


class TestPoolConformance(BackendConformance):
    """The whole conformance suite on the pool: each case's image goes to one of its nodes."""

    @pytest.fixture
    def backend(self, daemons: ThreeDaemons, request: pytest.FixtureRequest) -> Iterator[Backend]:
        def registry() -> str:  # started when a case first pushes
            return str(request.getfixturevalue("local_registry"))

        pool.POOL.reset()
        nodes = tuple(pool.Node(d.settings, (d.platform,)) for d in daemons.daemons)
        adapter = EngineBackend(BuildkitBuilder(nodes=nodes), registry)
        yield adapter
        adapter.cleanup()


def _image(name: str, *commands: str) -> Image:
    return Image.from_base(BUSYBOX).clone(name=name).with_commands(list(commands))


def test_the_same_image_lands_on_the_same_daemon(on_pool: ThreeDaemons) -> None:
    run = uuid.uuid4().hex[:8]
    image = _image(f"fi-pool-same-{run}", f"echo {run} > /marker")
    first = flyte_images.build(image, quiet=True)
    assert first.built
    identifier = str(first.uri).rsplit(":", 1)[1]
    (home,) = on_pool.holding(identifier)
    assert home.platform == "linux/amd64"

    pool.POOL.reset()  # another run
    again = flyte_images.build(image, force=True, quiet=True)
    assert again.built and again.uri == first.uri
    assert on_pool.holding(identifier) == [home] and home.built().count(identifier) == 2

    # A new version of the image (same repository) goes there too: its cache is there.
    changed = image.with_commands([f"echo {run}-v2 > /second"])
    newer = flyte_images.build(changed, quiet=True)
    assert on_pool.holding(str(newer.uri).rsplit(":", 1)[1]) == [home]


def test_distinct_images_use_several_daemons(on_pool: ThreeDaemons, local_registry: str) -> None:
    run = uuid.uuid4().hex[:8]
    amd = [d for d in on_pool.daemons if d.platform == "linux/amd64"]
    nodes = [pool.Node(d.settings, (d.platform,)) for d in amd]
    # Eight repository names whose ranking puts them on both amd64 nodes (almost any eight do).
    names = [f"fi-pool-spread-{run}-{i}" for i in range(64)]
    homes = {n: pool.rank(nodes, f"{local_registry}/{n}", ("linux/amd64",))[0].address for n in names}
    chosen = [*names[:7], next(n for n in names[7:] if homes[n] != homes[names[0]])]
    envs = [TaskEnvironment(f"e{i}", image=_image(n, f"echo {n} > /marker")) for i, n in enumerate(chosen)]
    cache = flyte_images.build_images(*envs, concurrency=4, quiet=True)
    assert set(cache.status.values()) == {"built"}

    used = set()
    for env in envs:
        (daemon,) = on_pool.holding(cache.identifiers[env.name] or "")
        used.add(daemon.address)
    assert len(used) >= 2
    assert on_pool.daemons[2].address not in used  # the arm64 node builds no amd64 image


class _Gate(http.server.BaseHTTPRequestHandler):
    """Build steps report that they started and wait until the test opens the gate."""

    started: ClassVar[set[str]] = set()
    opened: ClassVar[threading.Event] = threading.Event()

    def do_GET(self) -> None:
        if self.path.startswith("/started/"):
            self.started.add(self.path.removeprefix("/started/"))
        ok = not self.path.startswith("/go") or self.opened.is_set()
        self.send_response(200 if ok else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def gate() -> Iterator[str]:
    _Gate.started, _Gate.opened = set(), threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Gate)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        _Gate.opened.set()
        server.shutdown()


def test_a_daemon_killed_mid_deploy_loses_its_builds_to_the_others(on_pool: ThreeDaemons, gate: str) -> None:
    run = uuid.uuid4().hex[:8]
    names = [f"fi-pool-kill-{run}-{i}" for i in range(4)]
    # Each build says it started, then waits for the gate (the daemons use the host's network).
    wait = f"until wget -q -O /dev/null http://{gate}/go; do sleep 0.2; done"
    envs = [
        TaskEnvironment(f"k{i}", image=_image(n, f"wget -q -O /dev/null http://{gate}/started/{n}; {wait}"))
        for i, n in enumerate(names)
    ]
    outcome: dict[str, object] = {}

    def deploy() -> None:
        try:
            outcome["cache"] = flyte_images.build_images(*envs, concurrency=4, quiet=True)
        except Exception as exc:  # reported below, in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=deploy)
    thread.start()
    try:
        victim, moved = None, []
        while victim is None and thread.is_alive():
            for daemon in on_pool.daemons[:2]:
                moved = [n for n in names if daemon.running(f"started/{n}")]
                if moved:
                    victim = daemon
                    break
            time.sleep(0.2)
        assert victim is not None, outcome
        victim.kill()
    finally:
        _Gate.opened.set()
        thread.join(timeout=600)
    try:
        assert "error" not in outcome, outcome.get("error")
        cache = outcome["cache"]
        assert isinstance(cache, flyte_images.ImageCache)
        assert set(cache.status.values()) == {"built"}
        survivor = next(d for d in on_pool.daemons[:2] if d is not victim)
        for env, name in zip(envs, names, strict=True):
            identifier = cache.identifiers[env.name] or ""
            if name in moved:  # the daemon that was building it died: the other one built it
                assert identifier in survivor.built()
        assert not pool.POOL.healthy(pool.Node(victim.settings))
    finally:
        if victim is not None and victim.process is None:
            victim.start()  # the same root again: the session's pool is whole for the next test


def test_progress_names_the_node(on_pool: ThreeDaemons, local_registry: str, tmp_path: Path) -> None:
    (tmp_path / "context").mkdir()
    (tmp_path / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN echo {uuid.uuid4().hex}\n")
    reference = f"{local_registry}/fi-pool-progress:{uuid.uuid4().hex[:12]}"
    request = BuildRequest(tmp_path / "context", tmp_path / "Dockerfile", (reference,), ("linux/arm64",), True)
    events: list[ProgressEvent] = []
    BuildkitBuilder().build(request, events.append)
    arm = on_pool.daemons[2]
    said = [e.text for e in events if e.text.startswith("building linux/")]
    repository = reference.rsplit(":", 1)[0]
    assert len(said) == 1, said
    head = f"building linux/arm64 on buildkit node {arm.address} (choice 1 of 1 for {repository}: a build slot is free"
    assert said[0].startswith(f"{head}; waited ") and said[0].endswith(" s for a slot)")


def test_a_pool_no_node_of_which_answers_names_every_node(
    daemons: ThreeDaemons, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool.POOL.reset()
    port = free_port()
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_NODES", f"tcp://127.0.0.1:{port},unix://{tmp_path}/gone.sock")
    (tmp_path / "context").mkdir()
    (tmp_path / "Dockerfile").write_text(f"FROM {BUSYBOX}\n")
    request = BuildRequest(tmp_path / "context", tmp_path / "Dockerfile", ("fi-pool-none:1",), ("linux/amd64",), True)
    with pytest.raises(EngineUnavailableError) as failed:
        BuildkitBuilder().build(request, lambda event: None)
    message = str(failed.value)
    assert message.startswith("no BuildKit node of the pool could build fi-pool-none (linux/amd64); tried 2:")
    assert f"tcp://127.0.0.1:{port}: cannot reach buildkitd" in message
    assert (
        f"unix://{tmp_path}/gone.sock: buildkitd at unix://{tmp_path}/gone.sock (from a node of buildkit_nodes)"
        in message
    )
    pool.POOL.reset()


def test_a_bad_node_entry_stops_the_build_with_a_config_error(
    daemons: ThreeDaemons, local_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flyte-images.toml").write_text(
        f'image_builder = "buildkit"\nregistry = "{local_registry}"\n'
        f'[[buildkit_nodes]]\naddress = "{daemons.daemons[0].address}"\nmax_builds = "4"\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLYTE_IMAGES_BUILDKIT_ADDR", raising=False)
    before = daemons.daemons[0].built()
    with pytest.raises(ConfigError, match=r"buildkit_nodes\[0\]\.max_builds in .*flyte-images\.toml must be a whole"):
        flyte_images.build(_image("fi-pool-badconfig", f"echo {uuid.uuid4().hex}"), quiet=True)
    assert daemons.daemons[0].built() == before


def test_a_node_that_refuses_tls_is_skipped_and_a_node_without_platforms_takes_what_it_reports(
    daemons: ThreeDaemons, local_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool.POOL.reset()
    tcp, plain = daemons.daemons[1], daemons.daemons[0]
    cert, key = self_signed(tmp_path)  # a client certificate the daemon's CA never signed
    (tmp_path / "flyte-images.toml").write_text(
        f'image_builder = "buildkit"\nregistry = "{local_registry}"\n'
        f'[[buildkit_nodes]]\naddress = "{tcp.address}"\nplatforms = ["linux/amd64"]\n'
        f'ca = "{tcp.shared.ca}"\ncert = "{cert}"\nkey = "{key}"\nserver_name = "{tcp.shared.server_name}"\n'
        f'[[buildkit_nodes]]\naddress = "{plain.address}"\n'
    )
    monkeypatch.chdir(tmp_path)
    for name in ("ADDR", "NODES", "CA", "CERT", "KEY", "SERVER_NAME"):
        monkeypatch.delenv(f"FLYTE_IMAGES_BUILDKIT_{name}", raising=False)
    nodes = BuildkitBuilder().nodes or ()
    # An image whose first choice is the node that refuses us.
    run = uuid.uuid4().hex[:8]
    name = next(
        n
        for n in (f"fi-pool-tls-{run}-{i}" for i in range(64))
        if pool.rank(nodes, f"{local_registry}/{n}", ("linux/amd64",))[0].address == tcp.address
    )
    events: list[ProgressEvent] = []

    class Watching(BuildkitBuilder):
        def build(self, request: BuildRequest, progress: Progress) -> BuildResult:
            def both(event: ProgressEvent) -> None:
                events.append(event)
                progress(event)

            return super().build(request, both)

    built = flyte_images.build(_image(name, f"echo {run}"), builder=Watching(), quiet=True)
    assert built.built
    identifier = str(built.uri).rsplit(":", 1)[1]
    assert daemons.holding(identifier) == [plain]
    said = [e.text for e in events if e.text.startswith("buildkit node") or e.text.startswith("building linux/")]
    assert said[0].startswith(f"buildkit node {tcp.address} cannot be used (buildkitd at {tcp.address} (from a node")
    assert f"refused the client certificate {cert}" in said[0] and said[0].endswith("trying the next node")
    assert said[1].startswith(f"building linux/amd64 on buildkit node {plain.address} (choice 2 of 2 for ")
    assert "linux/amd64" in (pool.POOL.reported(nodes[1]) or ())  # what its daemon said it builds
    assert not pool.POOL.healthy(nodes[0])
    pool.POOL.reset()


# ----- several platforms, a registry cache per platform ---------------------------------------------

BOTH = ("linux/amd64", "linux/arm64")
_OUTPUT = re.compile(r"^(?:\[\S+\] )?#\d+ \d+\.\d+ ")  # "#9 0.217 text": a line a step's command printed


class Watching(BuildkitBuilder):
    """The buildkit backend, keeping every progress event and result of its builds."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[ProgressEvent] = []
        self.results: list[BuildResult] = []

    def build(self, request: BuildRequest, progress: Progress) -> BuildResult:
        def both(event: ProgressEvent) -> None:
            self.events.append(event)
            progress(event)

        result = super().build(request, both)
        self.results.append(result)
        return result

    def outcomes(self, platform: str, title_part: str) -> list[str]:
        """For each step of `platform` whose title has `title_part`: "cached" (CACHED), "ran" (its
        command printed a line), else "done" (a COPY, or BuildKit fetched its layers from a cache)."""
        titles = [e.step for e in self.events if e.kind == "step" and e.step.startswith(f"[{platform} ")]
        found = []
        for title in (t for t in titles if title_part in t):
            lines = [e for e in self.events if e.kind == "log" and e.step == title]
            ran = any(_OUTPUT.match(e.line) for e in lines)
            found.append("cached" if any(e.text == "CACHED" for e in lines) else "ran" if ran else "done")
        return found


def _manifest(registry: str, repository: str, reference: str) -> dict[str, object] | None:
    """A manifest as the registry serves it, or None when the tag is not there."""
    kinds = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json")
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{reference}", headers={"Accept": ", ".join(kinds)}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            loaded = json.load(answer)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    assert isinstance(loaded, dict)
    return loaded


def _layers(manifest: dict[str, object] | None) -> list[str]:
    assert manifest is not None
    layers = manifest["layers"]
    assert isinstance(layers, list)
    return [str(layer["digest"]) for layer in layers]


def _run_as(platform: str, uri: str, *command: str) -> str:
    docker("image", "rm", "-f", uri, check=False)  # the classic store keeps one platform per tag
    docker("pull", "--platform", platform, uri)
    done = docker("run", "--rm", "--platform", platform, uri, *command, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_each_platform_is_built_on_a_node_of_its_own_with_its_own_cache_tag(
    on_pool: ThreeDaemons, local_registry: str
) -> None:
    run = uuid.uuid4().hex[:8]
    name = f"fi-pool-arch-{run}"
    image = _image(name, "uname -m > /arch", f"echo {run} > /marker").clone(platform=BOTH)
    watching = Watching()
    built = flyte_images.build(image, builder=watching, cache="registry", quiet=True)
    assert built.built
    identifier = str(built.uri).rsplit(":", 1)[1]

    # The daemons' own records: the arm64 half on the arm64 node, the amd64 half on an amd64 node.
    arm = on_pool.daemons[2]
    assert [p for i, p in arm.builds() if i == identifier] == ["linux/arm64"]
    (amd,) = [d for d in on_pool.daemons[:2] if identifier in d.built()]
    assert [p for i, p in amd.builds() if i == identifier] == ["linux/amd64"]
    (result,) = watching.results
    assert result.nodes == {"linux/amd64": amd.address, "linux/arm64": arm.address}
    assert set(result.waited) == set(BOTH)
    said = [e.text for e in watching.events if e.text.startswith("building linux/")]
    assert any(t.startswith(f"building linux/arm64 on buildkit node {arm.address} (choice 1 of 1 ") for t in said)
    assert any(t.startswith(f"building linux/amd64 on buildkit node {amd.address} (choice ") for t in said)
    assert not any("emulated" in t for t in said)

    # One image: an index of the two, and its arm64 half runs as aarch64 (also its RUN step did).
    index = _manifest(local_registry, name, identifier)
    assert index is not None and index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert _run_as("linux/arm64", str(built.uri), "uname", "-m") == "aarch64"
    assert _run_as("linux/arm64", str(built.uri), "cat", "/arch") == "aarch64"
    assert _run_as("linux/amd64", str(built.uri), "cat", "/arch") == "x86_64"

    # Two cache tags, each with its own platform's layers (the base's), none shared.
    caches = {p: _layers(_manifest(local_registry, name, "buildcache-" + p.replace("/", "-"))) for p in BOTH}
    for platform in BOTH:
        base = _layers(_manifest(local_registry, name, f"{identifier}-{platform.replace('/', '-')}"))[0]
        other = next(p for p in BOTH if p != platform)
        assert base in caches[platform] and base not in caches[other]
    assert _manifest(local_registry, name, "buildcache") is None


def test_a_fresh_daemon_takes_each_platforms_unchanged_steps_from_its_cache_tag(
    on_pool: ThreeDaemons, local_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = uuid.uuid4().hex[:8]
    name = f"fi-pool-cache-{run}"
    source = tmp_path / "app.txt"
    source.write_text("v1\n")
    image = (
        _image(name, f"echo deps-ran-{run} | tee /deps")  # a step no earlier build cached
        .clone(platform=BOTH)
        .with_source_file(source, dst="/srv")
    )
    first = Watching()
    assert flyte_images.build(image, builder=first, cache="registry", quiet=True).built
    assert all(first.outcomes(p, "echo deps-ran") == ["ran"] for p in BOTH)

    # A new runner: one daemon with an empty root, building both platforms, and a changed file.
    with fresh_daemon(require_buildkit(), tmp_path / "fresh", "+".join(BOTH)) as fresh:
        monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_NODES", f"{fresh.address}={fresh.platform}")
        pool.POOL.reset()
        assert fresh.builds() == []
        source.write_text("v2\n")
        second = Watching()
        again = flyte_images.build(image, builder=second, cache="registry", quiet=True)
        assert again.built
        identifier = str(again.uri).rsplit(":", 1)[1]
        assert sorted(p for i, p in fresh.builds() if i == identifier) == list(BOTH)

    progress = "\n".join(e.line for e in second.events)
    for platform in BOTH:
        tag = "buildcache-" + platform.replace("/", "-")
        assert f"importing cache manifest from {local_registry}/{name}:{tag}" in progress
        # Its dependency step did not run again: CACHED, or DONE once its layers were fetched.
        assert second.outcomes(platform, "echo deps-ran") in (["cached"], ["done"])
        assert second.outcomes(platform, "/srv") == ["done"]
    assert f"deps-ran-{run}" not in progress.replace(f"echo deps-ran-{run}", "")


def test_the_command_line_says_where_each_platform_goes_and_went(
    on_pool: ThreeDaemons, local_registry: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    run = uuid.uuid4().hex[:8]
    (tmp_path / "images.py").write_text(
        "from flyte_images import Image\n"
        f"app = Image.from_base({BUSYBOX!r}).clone(name='fi-pool-cli-{run}', registry={local_registry!r}, "
        f"platform={BOTH!r}).with_commands(['echo {run}'])\n"
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "flyte_images._cli", *args]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=600, cwd=tmp_path)

    arm = on_pool.daemons[2]
    before = [d.built() for d in on_pool.daemons]
    dry = cli("build", "images.py", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    (reason,) = json.loads(dry.stdout)["reasons"].values()
    planned = re.search(r"; linux/amd64 on (\S+), linux/arm64 on (\S+)\)$", reason)
    assert planned is not None and planned.group(2) == arm.address, reason
    assert [d.built() for d in on_pool.daemons] == before  # a dry run builds nothing anywhere

    built = cli("build", "images.py", "--json")
    assert built.returncode == 0, built.stderr
    doc = json.loads(built.stdout)
    identifier = doc["identifiers"]["app"]
    amd = next(d for d in on_pool.daemons[:2] if identifier in d.built())
    assert identifier in arm.built()
    assert doc["nodes"] == {"app": {"linux/amd64": amd.address, "linux/arm64": arm.address}}
    assert amd.address == planned.group(1)  # where the dry run said it would go
    assert set(doc["waited"]["app"]) == set(BOTH) and all(w >= 0 for w in doc["waited"]["app"].values())
    said = cli("explain", "images.py")
    assert said.returncode == 0, said.stderr
    assert f"linux/arm64 on {arm.address}" in said.stdout + said.stderr
