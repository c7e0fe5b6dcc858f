"""Which BuildKit daemon of a pool builds what: the nodes as configured, each job's ranking of
them, and what this process knows of each (builds running, health, platforms it reported).

A job is one build request: its repository and platforms (a pushed image of several platforms
is one job per platform, so each is built where it is native). Its candidates are the nodes
that declare every platform it asks for (a node that declares none takes what its daemon
reports); when none does, every node is a candidate and the daemon emulates. The candidates are ranked by
rendezvous hashing of the repository and platforms over the node addresses: each image has the
same first node on every run and every machine with the same configuration, so its daemon-local
cache is found again, and distinct images spread over the nodes. Adding or removing a node moves
only the images whose first node it is or was.

A job takes its first healthy node when a build slot is free there (`max_builds`). When that
node is full the job waits for it, since its cache makes the build cheap, unless a node further
down its ranking runs nothing at all: an idle node starts the build now, while a slot on the
full node frees only when one of its running builds ends, and with the registry cache a build
on a node without the daemon-local layers re-runs only what that cache does not hold. A node
that cannot be reached, refuses TLS, or goes away during a build is unhealthy for
`UNHEALTHY_FOR` seconds: the jobs rank it after every healthy node (they still try it before
giving up). Nothing here talks to a daemon; `builders.buildkit` does, and reports back.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from flyte_images._config import NODES_KEY, BuildkitSettings
from flyte_images._errors import BuildError, ConfigError

DEFAULT_MAX_BUILDS = 2
UNHEALTHY_FOR = 30.0  # seconds a node that failed is ranked last; long enough to skip a dead one
_NODE_KEYS = ("address", "platforms", "max_builds", "ca", "cert", "key", "server_name")
_TLS_KEYS = ("ca", "cert", "key", "server_name")


@dataclass(frozen=True)
class Node:
    """One daemon of the pool: where it is, its client TLS files, the platforms it builds
    natively (empty: what its daemon reports) and how many builds it runs at once."""

    settings: BuildkitSettings
    platforms: tuple[str, ...] = ()
    max_builds: int = DEFAULT_MAX_BUILDS

    @property
    def address(self) -> str:
        return self.settings.addr


# ----- configuration ------------------------------------------------------------------------------


def parse_nodes(value: object, source: str, tls: BuildkitSettings) -> tuple[Node, ...]:
    """The nodes `value` describes: the FLYTE_IMAGES_BUILDKIT_NODES string
    ("ADDR=PLATFORM+PLATFORM,ADDR,..."; TLS files from `tls`, the FLYTE_IMAGES_BUILDKIT_* ones)
    or the config file's list of tables (a table's own TLS keys first, then `tls`'s). A bad
    entry is a ConfigError naming the key and `source`."""
    if isinstance(value, str):
        nodes = [_from_text(part.strip(), i, source, tls) for i, part in enumerate(value.split(","))]
    elif isinstance(value, list):
        nodes = [_from_table(entry, i, source, tls) for i, entry in enumerate(value)]
    else:
        raise ConfigError(
            f"{source} must be a list of [[{NODES_KEY}]] tables, each with an address, got {type(value).__name__}"
        )
    if not nodes:
        raise ConfigError(f"{source} lists no node; give at least one [[{NODES_KEY}]] table with an address")
    seen: set[str] = set()
    for node in nodes:
        if node.address in seen:
            raise ConfigError(f"{source} lists {node.address} twice; give each daemon once (raise its max_builds)")
        seen.add(node.address)
    return tuple(nodes)


def _from_text(part: str, index: int, source: str, tls: BuildkitSettings) -> Node:
    # The address's own "=" would be a query; none of buildkitd's address schemes has one.
    address, _, platforms = part.partition("=")
    where = f"{source}, entry {index + 1} ({part!r})"
    if not address:
        raise ConfigError(f"{where} has no address; give ADDR=PLATFORM+PLATFORM or ADDR, separated by commas")
    listed = tuple(p.strip() for p in platforms.split("+")) if platforms else ()
    return _node(address.strip(), listed, DEFAULT_MAX_BUILDS, _tls_of({}, tls), where)


def _from_table(entry: object, index: int, source: str, tls: BuildkitSettings) -> Node:
    place = source.removeprefix(f"{NODES_KEY} in ")

    def key(name: str = "") -> str:
        return f"{NODES_KEY}[{index}]{'.' if name else ''}{name} in {place}"

    if not isinstance(entry, dict):
        raise ConfigError(f"{key()} must be a table ([[{NODES_KEY}]]) with an address, got {entry!r}")
    unknown = sorted(set(entry) - set(_NODE_KEYS))
    if unknown:
        raise ConfigError(f"{key()}: unknown key {unknown[0]!r}; a node's keys are {', '.join(_NODE_KEYS)}")
    address = entry.get("address")
    if not isinstance(address, str) or not address:
        raise ConfigError(f'{key("address")} must be a daemon address such as "tcp://bk-1.ci:1234", got {address!r}')
    platforms = entry.get("platforms", [])
    if not isinstance(platforms, list) or not all(isinstance(p, str) for p in platforms):
        raise ConfigError(f'{key("platforms")} must be a list of platforms such as ["linux/amd64"], got {platforms!r}')
    max_builds = entry.get("max_builds", DEFAULT_MAX_BUILDS)
    if type(max_builds) is not int or max_builds < 1:
        raise ConfigError(
            f"{key('max_builds')} must be a whole number of builds at once, 1 or more, got {max_builds!r}"
        )
    for name in _TLS_KEYS:
        if name in entry and not isinstance(entry[name], str):
            raise ConfigError(f"{key(name)} must be a string, got {entry[name]!r}")
    return _node(address, tuple(platforms), max_builds, _tls_of(entry, tls), key())


def _tls_of(entry: dict[str, object], tls: BuildkitSettings) -> dict[str, str | None]:
    own = {key: entry.get(key) for key in _TLS_KEYS}
    if any(own.values()):  # a node with its own TLS files uses none of the shared ones
        return {key: str(value) if value else None for key, value in own.items()}
    return {key: getattr(tls, key) for key in _TLS_KEYS}


def _node(address: str, platforms: tuple[str, ...], max_builds: int, tls: dict[str, str | None], where: str) -> Node:
    url = urlsplit(address)
    if "://" not in address or url.scheme not in ("tcp", "unix"):
        raise ConfigError(f"{where}: the address {address!r} must be unix:///path/to/buildkitd.sock or tcp://host:port")
    if url.scheme == "tcp" and not _host_port(address):
        raise ConfigError(f"{where}: the address {address!r} needs a host and a port: tcp://host:port")
    for platform in platforms:
        parts = platform.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ConfigError(
                f"{where}: {platform!r} is not a platform; write os/arch, e.g. linux/amd64 or linux/arm64"
            )
    if bool(tls["cert"]) != bool(tls["key"]):
        raise ConfigError(f"{where}: a client certificate (cert) needs its key (key), and the key its certificate")
    for key in ("ca", "cert", "key"):
        value = tls[key]
        if value:
            tls[key] = str(Path(value).expanduser())
            if not Path(tls[key] or "").is_file():
                raise ConfigError(f"{where}: {key} names {value}, which is not a file")
    settings = BuildkitSettings(address, tls["ca"], tls["cert"], tls["key"], tls["server_name"])
    return Node(settings, platforms, max_builds)


def _host_port(address: str) -> bool:
    try:
        url = urlsplit(address)
        return bool(url.hostname and url.port)
    except ValueError:
        return False


# ----- ranking ----------------------------------------------------------------------------------------


def repository_of(reference: str) -> str:
    """`reference` without its tag or digest: what stays the same across an image's versions."""
    name = reference.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def rank(nodes: Sequence[Node], repository: str, platforms: Sequence[str]) -> list[Node]:
    """`nodes` in the job's order of preference: highest rendezvous score first."""
    key = f"{repository}\n{'+'.join(platforms)}\n"

    def score(node: Node) -> bytes:
        return hashlib.sha256((key + node.address).encode()).digest()

    return sorted(nodes, key=score, reverse=True)


def candidates(
    nodes: Sequence[Node], platforms: Sequence[str], reported: Callable[[Node], tuple[str, ...] | None]
) -> tuple[list[Node], bool]:
    """The nodes that build every one of `platforms` natively (declared, else as `reported`, where
    None is not known yet: a candidate until its daemon says), and whether there were none, so
    that every node is one and the daemon emulates."""
    able = [n for n in nodes if all(p in (n.platforms or reported(n) or platforms) for p in platforms)]
    return (able, False) if able else (list(nodes), True)


# ----- what this process knows of each node -----------------------------------------------------------


@dataclass
class _State:
    running: int = 0
    down_until: float = 0.0
    why: str = ""
    reported: tuple[str, ...] | None = None


@dataclass
class Pool:
    """Builds running per node, nodes' health and reported platforms, shared by every build of
    the process (a deploy runs several at once), keyed by address."""

    clock: Callable[[], float] = time.monotonic
    _states: dict[str, _State] = field(default_factory=dict)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def _state(self, node: Node) -> _State:
        return self._states.setdefault(node.address, _State())

    def healthy(self, node: Node) -> bool:
        with self._changed:
            return self._state(node).down_until <= self.clock()

    def ordered(self, ranked: Sequence[Node]) -> list[Node]:
        """`ranked` with the healthy nodes first, each group in ranking order."""
        now = self.clock()
        with self._changed:
            return sorted(ranked, key=lambda n: self._state(n).down_until > now)

    def pick(self, ranked: Sequence[Node]) -> tuple[Node, str] | None:
        """The node the job takes now and why, or None when it should wait (see the module)."""
        with self._changed:
            order = self.ordered(ranked)
            if not order:
                return None
            first = order[0]
            if self._state(first).running < first.max_builds:
                if first is ranked[0]:
                    return first, "a build slot is free"
                return first, f"{ranked[0].address} is unhealthy: {self._state(ranked[0]).why[:200]}"
            idle = next((n for n in order[1:] if self._state(n).running == 0), None)
            if idle is None:
                return None
            return idle, f"{first.address} runs {first.max_builds} builds, its max_builds, and this node is idle"

    @contextmanager
    def slot(self, ranked: Sequence[Node], stopped: threading.Event | None = None) -> Iterator[tuple[Node, str]]:
        """Wait for a node (`pick`), hold one of its build slots for the block; BuildError when
        `stopped` is set (Ctrl-C) before one is free, so a stopped deploy starts no new build."""
        with self._changed:
            chosen = self.pick(ranked)
            while chosen is None or (stopped is not None and stopped.is_set()):
                if stopped is not None and stopped.is_set():
                    raise BuildError("the build was stopped while it waited for a BuildKit node")
                self._changed.wait(timeout=UNHEALTHY_FOR)  # a node's health also returns with time
                chosen = self.pick(ranked)
            self._state(chosen[0]).running += 1
        try:
            yield chosen
        finally:
            with self._changed:
                self._state(chosen[0]).running -= 1
                self._changed.notify_all()

    def wake(self) -> None:
        """Let every job that waits look again (it was stopped)."""
        with self._changed:
            self._changed.notify_all()

    def mark_down(self, node: Node, why: str) -> None:
        with self._changed:
            state = self._state(node)
            state.down_until, state.why = self.clock() + UNHEALTHY_FOR, why
            self._changed.notify_all()

    def mark_up(self, node: Node) -> None:
        with self._changed:
            self._state(node).down_until = 0.0

    def reported(self, node: Node) -> tuple[str, ...] | None:
        with self._changed:
            return self._state(node).reported

    def report(self, node: Node, platforms: Sequence[str]) -> None:
        with self._changed:
            self._state(node).reported = tuple(platforms)

    def reset(self) -> None:
        with self._changed:
            self._states.clear()


POOL = Pool()  # the process's one view of the nodes


def no_node_error(repository: str, platforms: Sequence[str], tried: Sequence[tuple[Node, str]]) -> str:
    """The message of a build no node could take: every node tried and why it could not."""
    what = f"{repository} ({', '.join(platforms)})" if platforms else repository
    reasons = "; ".join(f"{node.address}: {why}" for node, why in tried)
    return f"no BuildKit node of the pool could build {what}; tried {len(tried)}: {reasons}"
