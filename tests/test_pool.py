"""The buildkit backend's pool without daemons: its configuration (environment and config file),
each job's ranking of the nodes, the slots and health the process keeps for each node, and how
a pushed image of several platforms is split into one job per platform (the daemons, the
registry and buildx replaced by recorders here; tests/test_engine_pool.py builds for real)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from flyte_images import _config
from flyte_images._config import BuildkitSettings
from flyte_images._errors import BuildError, ConfigError
from flyte_images.builders import _buildx, _multiarch, buildkit, pool
from flyte_images.builders.base import BuildRequest, BuildResult, Progress, ProgressEvent, platform_cache_specs
from flyte_images.builders.buildkit import BuildkitBuilder
from flyte_images.builders.pool import Node, Pool

NO_TLS = BuildkitSettings("unix:///unused")


def _nodes(*addresses: str, max_builds: int = 2, platforms: tuple[str, ...] = ("linux/amd64",)) -> list[Node]:
    return [Node(BuildkitSettings(a), platforms, max_builds) for a in addresses]


# ----- configuration ------------------------------------------------------------------------------


def test_the_environment_lists_nodes_with_their_platforms_and_shared_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_NODES", "tcp://bk-1:1234=linux/amd64+linux/386, unix:///run/bk.sock")
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_CA", str(ca))
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_SERVER_NAME", "bk.test")
    nodes = BuildkitBuilder().nodes
    assert nodes == (
        Node(BuildkitSettings("tcp://bk-1:1234", str(ca), server_name="bk.test"), ("linux/amd64", "linux/386")),
        Node(BuildkitSettings("unix:///run/bk.sock", str(ca), server_name="bk.test"), ()),
    )
    assert nodes[0].max_builds == pool.DEFAULT_MAX_BUILDS == 2


def test_the_config_file_lists_nodes_with_their_own_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cert", "key", "ca"):
        (tmp_path / f"{name}.pem").write_text("x")
    (tmp_path / "flyte-images.toml").write_text(
        'image_builder = "buildkit"\n'
        f'buildkit_ca = "{tmp_path}/ca.pem"\n'
        "[[buildkit_nodes]]\n"
        'address = "tcp://bk-1.ci:1234"\n'
        'platforms = ["linux/amd64"]\n'
        "max_builds = 4\n"
        f'cert = "{tmp_path}/cert.pem"\n'
        f'key = "{tmp_path}/key.pem"\n'
        'server_name = "bk-1"\n'
        "[[buildkit_nodes]]\n"
        'address = "tcp://bk-2.ci:1234"\n'
    )
    monkeypatch.chdir(tmp_path)
    first, second = BuildkitBuilder().nodes or ()
    # A node with TLS keys of its own uses those only; one without takes the shared buildkit_* ones.
    tls = BuildkitSettings("tcp://bk-1.ci:1234", None, f"{tmp_path}/cert.pem", f"{tmp_path}/key.pem", "bk-1")
    assert first == Node(tls, ("linux/amd64",), 4)
    assert second == Node(BuildkitSettings("tcp://bk-2.ci:1234", f"{tmp_path}/ca.pem"), (), 2)

    # A daemon address set above the file (the environment) takes the place of the file's pool.
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_ADDR", "unix:///run/one.sock")
    assert BuildkitBuilder().nodes is None
    assert BuildkitBuilder().settings.addr == "unix:///run/one.sock"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('address = "tcp://a:1"\nmax_builds = "four"', r"buildkit_nodes\[1\]\.max_builds in .* must be a whole number"),
        ('address = "tcp://a:1"\nmax_builds = 0', r"buildkit_nodes\[1\]\.max_builds .* got 0"),
        ('address = "tcp://a:1"\nplatfroms = ["linux/amd64"]', r"buildkit_nodes\[1\] in .*: unknown key 'platfroms'"),
        ('address = "tcp://a:1"\nplatforms = "linux/amd64"', r"buildkit_nodes\[1\]\.platforms in .* must be a list"),
        ('address = "tcp://a:1"\nplatforms = ["amd64"]', r"buildkit_nodes\[1\].*'amd64' is not a platform"),
        ('platforms = ["linux/amd64"]', r"buildkit_nodes\[1\]\.address in .* must be a daemon address"),
        ('address = "bk-2:1234"', r"buildkit_nodes\[1\].*'bk-2:1234' must be unix:///.* or tcp://host:port"),
        ('address = "tcp://bk-2"', r"buildkit_nodes\[1\].*needs a host and a port"),
        ('address = "tcp://a:1"\ncert = "/nowhere/cert.pem"', r"buildkit_nodes\[1\].*needs its key"),
        (
            'address = "tcp://a:1"\nca = "/nowhere/ca.pem"',
            r"buildkit_nodes\[1\].*ca names /nowhere/ca.pem, which is not",
        ),
        ('address = "unix:///run/a.sock"', "lists unix:///run/a.sock twice"),
    ],
)
def test_a_bad_node_entry_is_a_config_error_naming_the_key(
    entry: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flyte-images.toml").write_text(
        f'[[buildkit_nodes]]\naddress = "unix:///run/a.sock"\n\n[[buildkit_nodes]]\n{entry}\n'
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message) as wrong:
        BuildkitBuilder().nodes  # noqa: B018 - reading the setting is what raises
    assert str(tmp_path / "flyte-images.toml") in str(wrong.value)


def test_a_bad_environment_entry_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, message in [
        ("tcp://a:1,=linux/amd64", "entry 2 .* has no address"),
        ("tcp://a:1=linux", "'linux' is not a platform"),
        ("a:1", "must be unix:///"),
    ]:
        monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_NODES", value)
        with pytest.raises(ConfigError, match=f"FLYTE_IMAGES_BUILDKIT_NODES.*{message}"):
            BuildkitBuilder().nodes  # noqa: B018
    with pytest.raises(ConfigError, match="must be a list of"):
        pool.parse_nodes({"address": "tcp://a:1"}, "buildkit_nodes in f.toml", NO_TLS)


def test_without_nodes_the_backend_builds_on_one_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYTE_IMAGES_BUILDKIT_NODES", raising=False)
    assert BuildkitBuilder().nodes is None
    monkeypatch.setenv("FLYTE_IMAGES_BUILDKIT_NODES", "unix:///a.sock,unix:///b.sock")
    assert BuildkitBuilder(BuildkitSettings("unix:///given.sock")).nodes is None  # settings given: that daemon
    _config.reset()


# ----- ranking ------------------------------------------------------------------------------------


def test_an_image_ranks_the_nodes_the_same_way_for_every_version() -> None:
    nodes = _nodes("tcp://bk-1:1234", "tcp://bk-2:1234", "tcp://bk-3:1234")
    assert pool.repository_of("localhost:5000/team/app:abc123") == "localhost:5000/team/app"
    assert pool.repository_of("app:v1") == "app" and pool.repository_of("ghcr.io/a/b@sha256:00") == "ghcr.io/a/b"
    first = pool.rank(nodes, pool.repository_of("ghcr.io/acme/app:v1"), ("linux/amd64",))
    again = pool.rank(list(reversed(nodes)), pool.repository_of("ghcr.io/acme/app:v2"), ("linux/amd64",))
    assert first == again  # the listed order does not matter, nor the tag
    assert sorted(first, key=nodes.index) == nodes


def test_distinct_images_spread_and_a_removed_node_moves_only_its_own() -> None:
    nodes = _nodes("tcp://bk-1:1234", "tcp://bk-2:1234", "tcp://bk-3:1234")
    images = [f"ghcr.io/acme/service-{i}" for i in range(30)]
    home = {image: pool.rank(nodes, image, ("linux/amd64",))[0] for image in images}
    assert set(home.values()) == set(nodes)
    fewer = [n for n in nodes if n is not nodes[1]]
    for image in images:
        moved_to = pool.rank(fewer, image, ("linux/amd64",))[0]
        assert moved_to == home[image] or home[image] == nodes[1]


def test_candidates_are_the_nodes_of_the_platform_else_every_node_emulating() -> None:
    amd = _nodes("unix:///amd-1", "unix:///amd-2")
    arm = _nodes("unix:///arm", platforms=("linux/arm64",))
    free = _nodes("unix:///free", platforms=())
    nodes = [*amd, *arm, *free]
    reported = {"unix:///free": ("linux/riscv64",)}.get
    assert pool.candidates(nodes, ("linux/amd64",), lambda n: None) == ([*amd, *free], False)
    assert pool.candidates(nodes, ("linux/arm64",), lambda n: reported(n.address)) == (arm, False)
    assert pool.candidates(nodes, ("linux/s390x",), lambda n: reported(n.address)) == (nodes, True)
    assert pool.candidates(nodes, (), lambda n: None) == (nodes, False)


# ----- slots and health ---------------------------------------------------------------------------


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_first_node_sends_a_job_on_only_to_an_idle_node() -> None:
    first, second, third = _nodes("unix:///1", "unix:///2", "unix:///3", max_builds=1)
    state = Pool()
    with state.slot([first, second, third]) as taken:
        assert taken == (first, "a build slot is free")
        with state.slot([first, second, third]) as spilled:
            assert spilled == (second, "unix:///1 runs 1 builds, its max_builds, and this node is idle")
            # The first node is full and the others run something: waiting for the first is cheaper.
            assert state.pick([first, second]) is None
            assert state.pick([first, third]) == (third, spilled[1])


def test_a_job_waits_for_its_node_and_takes_it_when_a_build_ends() -> None:
    only = _nodes("unix:///only", max_builds=1)
    state = Pool()
    taken: list[Node] = []
    waiting = threading.Event()

    def second_job() -> None:
        waiting.set()
        with state.slot(only) as (node, _why):
            taken.append(node)

    with state.slot(only):
        thread = threading.Thread(target=second_job)
        thread.start()
        waiting.wait()
        assert not taken  # its slot is held
    thread.join(timeout=60)
    assert taken == only


def test_a_stopped_job_that_waits_for_a_node_starts_no_build() -> None:
    only = _nodes("unix:///only", max_builds=1)
    state = Pool()
    stopped = threading.Event()
    outcome: list[object] = []

    def waiting_job() -> None:
        try:
            with state.slot(only, stopped):
                outcome.append("built")
        except BuildError as exc:
            outcome.append(exc)

    with state.slot(only):
        thread = threading.Thread(target=waiting_job)
        thread.start()
        stopped.set()  # Ctrl-C: the running build is told to stop, the waiting one must not start
        state.wake()
        thread.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], BuildError)
    assert "stopped while it waited for a BuildKit node" in str(outcome[0])


def test_an_unhealthy_node_is_ranked_last_for_a_while() -> None:
    clock = Clock()
    first, second = _nodes("unix:///1", "unix:///2")
    state = Pool(clock=clock)
    state.mark_down(first, "there is no socket at /1")
    node, why = state.pick([first, second]) or (None, "")
    assert node is second and why == "unix:///1 is unhealthy: there is no socket at /1"
    assert state.ordered([first, second]) == [second, first]  # still tried, last
    clock.now += pool.UNHEALTHY_FOR + 1
    assert state.pick([first, second]) == (first, "a build slot is free")


def test_the_error_names_every_node_tried_and_why() -> None:
    first, second = _nodes("tcp://bk-1:1234", "unix:///run/bk.sock")
    message = pool.no_node_error("ghcr.io/acme/app", ("linux/amd64",), [(first, "refused"), (second, "no socket")])
    assert message == (
        "no BuildKit node of the pool could build ghcr.io/acme/app (linux/amd64); tried 2: "
        "tcp://bk-1:1234: refused; unix:///run/bk.sock: no socket"
    )


# ----- several platforms ----------------------------------------------------------------------------


class Daemons:
    """Every `docker buildx build` the backend would run, on which daemon, and the indexes it writes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built: list[tuple[str, BuildRequest]] = []
        self.indexes: dict[str, dict[str, str]] = {}
        monkeypatch.setattr(buildkit, "probe", lambda settings, origin=None: None)
        monkeypatch.setattr(buildkit, "ensure_builder", lambda settings: f"builder-of-{settings.addr}")
        monkeypatch.setattr(buildkit, "_run", self.run)
        monkeypatch.setattr(_buildx, "check_cli", lambda *messages: None)
        monkeypatch.setattr(_multiarch, "_pushed_before", lambda request, parts: set())
        monkeypatch.setattr(_multiarch, "_write_index", self.write_index)
        pool.POOL.reset()

    def run(
        self, request: BuildRequest, progress: Progress, settings: BuildkitSettings, builder: str, runs: object = None
    ) -> BuildResult:
        assert builder == f"builder-of-{settings.addr}"
        self.built.append((settings.addr, request))
        return BuildResult(request.tags[0], "sha256:" + "1" * 64, nodes={p: settings.addr for p in request.platforms})

    def write_index(self, tag: str, parts: dict[str, str]) -> str:
        self.indexes[tag] = parts
        return "sha256:" + "2" * 64

    def where(self) -> dict[str, str]:
        return {request.platforms[0]: address for address, request in self.built}


def _request(tmp_path: Path, *platforms: str, cache: bool = True) -> BuildRequest:
    cache_from, cache_to = platform_cache_specs("reg.example/app", platforms) if cache else ((), ())
    return BuildRequest(tmp_path, tmp_path / "Dockerfile", ("reg.example/app:abc",), platforms, True,
                        cache_from=cache_from, cache_to=cache_to)  # fmt: skip


def test_each_platform_of_a_pushed_image_is_built_on_a_node_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemons = Daemons(monkeypatch)
    amd, arm = _nodes("unix:///amd", "unix:///arm", platforms=("linux/amd64",))
    arm = Node(arm.settings, ("linux/arm64",))
    events: list[ProgressEvent] = []
    both = ("linux/amd64", "linux/arm64", "linux/s390x")
    result = BuildkitBuilder(nodes=(amd, arm)).build(_request(tmp_path, *both), events.append)

    where = daemons.where()
    assert where["linux/amd64"] == "unix:///amd" and where["linux/arm64"] == "unix:///arm"
    assert where["linux/s390x"] in ("unix:///amd", "unix:///arm")  # no node declares it: emulated
    assert result.nodes == where and set(result.waited) == set(both)
    assert result.digest == "sha256:" + "2" * 64
    assert daemons.indexes == {"reg.example/app:abc": {p: f"reg.example/app:abc-{p.replace('/', '-')}" for p in both}}
    for _address, request in daemons.built:  # each platform reads and writes its own cache tag only
        tag = "buildcache-" + request.platforms[0].replace("/", "-")
        assert [spec.split(",")[1] for spec in request.cache_to] == [f"ref=reg.example/app:{tag}"]
        assert [spec.split(",")[1] for spec in request.cache_from] == [f"ref=reg.example/app:{tag}"]
    said = sorted(e.text for e in events if e.text.startswith("building "))
    assert said[0].startswith("building linux/amd64 on buildkit node unix:///amd (choice 1 of 1 for reg.example/app")
    assert said[0].endswith("a build slot is free; waited 0.0 s for a slot)")
    assert said[1].startswith("building linux/arm64 on buildkit node unix:///arm (choice 1 of 1 for ")
    assert "; no node declares linux/s390x, so it is emulated; waited " in said[2]
    pool.POOL.reset()


def test_one_daemon_builds_the_platforms_apart_only_for_their_own_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemons = Daemons(monkeypatch)
    one = BuildkitBuilder(BuildkitSettings("unix:///one"))
    result = one.build(_request(tmp_path, "linux/amd64", "linux/arm64"), lambda event: None)
    assert sorted(daemons.where()) == ["linux/amd64", "linux/arm64"] and len(daemons.built) == 2
    assert result.nodes == {"linux/amd64": "unix:///one", "linux/arm64": "unix:///one"}

    daemons.built.clear()  # without a registry cache per platform: one solve, as before
    one.build(_request(tmp_path, "linux/amd64", "linux/arm64", cache=False), lambda event: None)
    ((_address, request),) = daemons.built
    assert request.platforms == ("linux/amd64", "linux/arm64")


# ----- where builds go, said ---------------------------------------------------------------------------


def test_routing_names_each_jobs_first_choice_without_asking_a_daemon() -> None:
    backend = BuildkitBuilder(nodes=tuple(_nodes("unix:///a1", "unix:///a2")))
    first = backend.routing("reg.example/app:1", ("linux/amd64",), True)
    assert first == backend.routing("reg.example/app:2", ("linux/amd64",), True)  # the image's node, every version
    assert first["linux/amd64"] in ("unix:///a1", "unix:///a2")
    assert backend.routing("reg.example/app:1", ("linux/s390x",), True)["linux/s390x"].endswith(" (emulated)")
    one = BuildkitBuilder(BuildkitSettings("tcp://bk:1234"))
    assert one.routing("reg.example/app:1", ("linux/amd64", "linux/arm64"), True) == dict.fromkeys(
        ("linux/amd64", "linux/arm64"), "tcp://bk:1234"
    )


def test_a_build_says_where_each_platform_was_built_and_a_dry_run_where_it_would_be(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import flyte_images
    from flyte_images import Image

    daemons = Daemons(monkeypatch)
    amd = Node(BuildkitSettings("unix:///amd"), ("linux/amd64",))
    arm = Node(BuildkitSettings("unix:///arm"), ("linux/arm64",))
    backend = BuildkitBuilder(nodes=(amd, arm))
    both = ("linux/amd64", "linux/arm64")
    image = (
        Image.from_base("python:3.12-slim")
        .clone(name="routed", registry="reg.example", platform=both)  # type: ignore[arg-type]
        .with_commands(["true"])
    )
    dry = flyte_images.build(image, builder=backend, force=True, dry_run=True, quiet=True)
    assert dry.reason == "dry run: would build (linux/amd64 on unix:///amd, linux/arm64 on unix:///arm)"
    assert daemons.built == []
    built = flyte_images.build(image, builder=backend, force=True, quiet=True)
    assert built.built and built.nodes == {"linux/amd64": "unix:///amd", "linux/arm64": "unix:///arm"}
    assert built.where() == "linux/amd64 on unix:///amd, linux/arm64 on unix:///arm"
    pool.POOL.reset()
