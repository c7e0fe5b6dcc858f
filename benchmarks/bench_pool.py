"""BuildKit pool benchmark: two nodes against one, and a fresh daemon with the registry cache.

On buildkitd daemons of this benchmark alone (the binary and configuration
fixtures/engine/buildkit.sh installed), each limited to one step at a time (`max-parallelism = 1`
in its buildkitd.toml) and listed with `max_builds = 1`, pushing to a registry on loopback:

  spread   8 independent images, each a `RUN sleep 2` (a step that waits on I/O, as downloads
           do), built at once (`build_images(concurrency=8)`) on a pool of one node, then of two;
           goal: two nodes take <= 0.6x the time of one
  cache    an image of four `sleep 3` dependency steps and a source file, built cold (empty
           daemon, empty registry cache) with cache="registry", then, with the file changed, on
           a wiped daemon (a new runner) that imports the platform's cache tag; goal <= 0.3x

Every image gets its own marker, so no measured step is found in a cache it should not be; the
base is pulled once before the spread runs. Prints each figure beside its goal.
Needs the engine (fixtures/engine/setup.sh: dockerd, docker-registry, buildkitd).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from private_daemon import BUILDKIT_ENV, Daemon

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

IMAGES = 8
SPREAD_GOAL, CACHE_GOAL = 0.6, 0.3


def use_pool(home: Path, registry: str, daemons: list[Daemon], name: str) -> None:
    """Point the buildkit backend at `daemons`, one build each, through a config file."""
    config = home / f"{name}.toml"
    tables = "".join(
        f'[[buildkit_nodes]]\naddress = "{d.addr}"\nplatforms = ["linux/amd64"]\nmax_builds = 1\n' for d in daemons
    )
    config.write_text(f'image_builder = "buildkit"\nregistry = "{registry}"\n{tables}')
    import flyte_images
    from flyte_images.builders import pool

    flyte_images.init_from_config(config)
    pool.POOL.reset()


def spread(nodes: int, home: Path, registry: str, daemons: list[Daemon]) -> float:
    from engine_support import BUSYBOX

    import flyte_images
    from flyte_images import Image, TaskEnvironment

    use_pool(home, registry, daemons[:nodes], f"spread-{nodes}")
    run = uuid.uuid4().hex[:8]
    envs = [
        TaskEnvironment(f"e{i}", image=Image.from_base(BUSYBOX).clone(name=f"bench-pool-{run}-{i}").with_commands(
            [f"sleep 2 && echo {run}-{i} > /marker"]  # its own step: no image finds another's in a cache
        ))
        for i in range(IMAGES)
    ]  # fmt: skip
    started = time.perf_counter()
    cache = flyte_images.build_images(*envs, concurrency=IMAGES, quiet=True)
    elapsed = time.perf_counter() - started
    if set(cache.status.values()) != {"built"}:
        raise SystemExit(f"the spread builds did not all build: {cache.status}")
    return elapsed


def cached(home: Path, registry: str, daemon: Daemon) -> tuple[float, float]:
    """(cold build, fresh daemon with the registry cache) of one image."""
    from engine_support import BUSYBOX

    import flyte_images
    from flyte_images import Image

    use_pool(home, registry, [daemon], "cache")
    run = uuid.uuid4().hex[:8]
    source = home / f"app-{run}.txt"
    source.write_text("v1\n")
    image = (
        Image.from_base(BUSYBOX)
        .clone(name=f"bench-pool-cache-{run}")
        .with_commands([f"sleep 3 && echo {run}-{step} > /dep{step}" for step in range(4)])
        .with_source_file(source, dst="/srv")
    )
    times = []
    for version in ("v1", "v2"):
        source.write_text(f"{version}\n")
        daemon.wipe()
        started = time.perf_counter()
        # The whole image on the daemon: the default would append the changed file to the
        # engine part the first build pushed, and build nothing.
        built = flyte_images.build(image, builder="buildkit", cache="registry", quiet=True)
        times.append(time.perf_counter() - started)
        if not built.built:
            raise SystemExit(f"{built.uri} was not built: {built.reason}")
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    from engine_support import engine_problem, registry

    found = engine_problem()
    if found:
        sys.exit(f"pool benchmark needs the engine: {found} (run fixtures/engine/setup.sh)")
    if not BUILDKIT_ENV.is_file():
        sys.exit(f"pool benchmark needs buildkitd: {BUILDKIT_ENV} is missing (run fixtures/engine/buildkit.sh)")
    for name in ("ADDR", "NODES"):
        os.environ.pop(f"FLYTE_IMAGES_BUILDKIT_{name}", None)
    home = Path(tempfile.mkdtemp(prefix="fi-bench-pool-"))
    os.environ.setdefault("FLYTE_IMAGES_CACHE_DIR", str(home / "cache"))
    daemons = [Daemon(home / f"node-{i}", one_step=True) for i in range(2)]
    times: dict[str, list[float]] = {"one node": [], "two nodes": [], "cold": [], "fresh + cache": []}
    try:
        for daemon in daemons:
            daemon.start()
        with registry() as reg:
            spread(2, home, reg.host, daemons)  # pulls the base on both nodes: not measured
            for run in range(args.repeat):
                for nodes in (1, 2) if run % 2 == 0 else (2, 1):
                    times["two nodes" if nodes == 2 else "one node"].append(spread(nodes, home, reg.host, daemons))
                cold, warm = cached(home, reg.host, daemons[0])
                times["cold"].append(cold)
                times["fresh + cache"].append(warm)
    finally:
        for daemon in daemons:
            daemon.stop()
            subprocess.run(["umount", "-R", str(daemon.root)], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)
    med = {key: statistics.median(value) for key, value in times.items()}
    print(f"pool benchmark: buildkitd nodes of max-parallelism 1, registry on loopback, {os.cpu_count()} cores")
    print(f"median of {args.repeat} runs each")
    print(f"{IMAGES} images of `RUN sleep 2`   one node {med['one node']:6.2f}s  two nodes {med['two nodes']:6.2f}s")
    spread_ratio = med["two nodes"] / med["one node"]
    cache_ratio = med["fresh + cache"] / med["cold"]
    print(f"  two nodes / one node      {spread_ratio:5.2f}x  (goal <= {SPREAD_GOAL}x)")
    warm = med["fresh + cache"]
    print(f"4 x `sleep 3` + a file     cold {med['cold']:6.2f}s  fresh daemon + registry cache {warm:6.2f}s")
    print(f"  fresh + cache / cold      {cache_ratio:5.2f}x  (goal <= {CACHE_GOAL}x)")
    print(json.dumps(times))


if __name__ == "__main__":
    main()
