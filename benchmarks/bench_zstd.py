"""zstd against gzip layers: push and pull of a large Python image, in the same run.

Image: the busybox base + one copy of a site-packages folder of about --mbytes MB made to look
like installed wheels (Python sources, which compress well, and native libraries, half of whose
bytes are random). Built with the buildkit backend (`compression="gzip"` / `"zstd"`) and pushed to
a registry on loopback, on a buildkitd of this benchmark alone (fixtures/engine/buildkit.sh
installs it), wiped before every measured step so nothing is reused:

  push   build(..., builder="buildkit", compression=...): the context sent to the daemon, the
         copy, every layer compressed (the base's too: force-compression) and uploaded
  pull   a build FROM the pushed image with one RUN: every layer downloaded, decompressed and
         unpacked by the daemon, as a node pulls an image before it starts a task
  size   the pushed layers' bytes

Prints the median of --repeat runs of each, gzip and zstd alternating, and zstd's ratio to gzip.
Needs the engine (fixtures/engine/setup.sh: dockerd, docker-registry, buildkitd).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from private_daemon import BUILDKIT_ENV, Daemon

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

COMPRESSIONS = ("gzip", "zstd")
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
# Tokens of Python source: what a wheel's .py files are made of.
_TOKENS = (
    "def class return import from self None True False if else elif for in while with as try except "
    "raise yield lambda async await assert global pass break continue and or not is numpy torch array "
    "tensor shape dtype device module forward config value result index items keys append extend "
    "(self, ): -> int str float list dict tuple Optional Union __init__ __call__ = == += 0 1 2 # ' \" ."
)
WORDS = _TOKENS.split()


def make_tree(root: Path, mbytes: int) -> None:
    """site-packages of about `mbytes` MB: per package, Python sources and one native library
    (half random blocks, half a repeated one: about as compressible as real shared objects)."""
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == str(mbytes):
        return
    rng = random.Random(0)
    target, written, package = mbytes << 20, 0, 0
    while written < target:
        folder = root / f"pkg{package:03d}" / "core"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(24):
            text = " ".join(rng.choices(WORDS, k=1600)).replace(": ", ":\n    ") + "\n"
            written += (folder / f"mod{index:02d}.py").write_text(text)
        with open(folder / "_native.cpython-311-x86_64-linux-gnu.so", "wb") as handle:
            pattern = rng.randbytes(4096)
            for block in range(384):
                written += handle.write(os.urandom(4096) if block % 2 else pattern)
        package += 1
    marker.write_text(str(mbytes))


def layers_bytes(host: str, uri: str) -> tuple[int, set[str]]:
    repository, tag = uri.split("/", 1)[1].rsplit(":", 1)
    answer = httpx.get(f"http://{host}/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT})
    answer.raise_for_status()
    layers = answer.json()["layers"]
    return sum(layer["size"] for layer in layers), {layer["mediaType"].rsplit("+", 1)[-1] for layer in layers}


def pull(daemon_builder: str, uri: str, folder: Path) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(f"FROM {uri}\nRUN find /opt/site-packages -name mod00.py | grep -q .\n")
    started = time.perf_counter()
    command = ["docker", "buildx", "build", "--builder", daemon_builder, "--progress", "quiet", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pulling {uri} through buildkitd failed:\n{done.stderr[-2000:]}")
    return elapsed


def line(label: str, times: list[float], floor: list[float] | None = None) -> str:
    med = statistics.median(times)
    ratio = f"  {med / statistics.median(floor):5.2f}x" if floor else ""
    return f"{label:<12} {med:7.2f}s  (min {min(times):.2f}, max {max(times):.2f}){ratio}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mbytes", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=Path(".bench/zstd/site-packages"))
    args = parser.parse_args()
    from engine_support import BUSYBOX, engine_problem, registry

    found = engine_problem()
    if found:
        sys.exit(f"zstd benchmark needs the engine: {found} (run fixtures/engine/setup.sh)")
    if not BUILDKIT_ENV.is_file():
        sys.exit(f"zstd benchmark needs buildkitd: {BUILDKIT_ENV} is missing (run fixtures/engine/buildkit.sh)")
    tree = args.tree.resolve()
    make_tree(tree, args.mbytes)
    home = Path(tempfile.mkdtemp(prefix="fi-bench-zstd-"))
    os.environ.setdefault("FLYTE_IMAGES_CACHE_DIR", str(home / "cache"))
    daemon = Daemon(home)
    daemon.start()
    os.environ["FLYTE_IMAGES_BUILDKIT_ADDR"] = daemon.addr
    import flyte_images
    from flyte_images import Image
    from flyte_images.builders.buildkit import BuildkitBuilder, ensure_builder

    builder = ensure_builder(BuildkitBuilder().settings)
    pushes: dict[str, list[float]] = {c: [] for c in COMPRESSIONS}
    pulls: dict[str, list[float]] = {c: [] for c in COMPRESSIONS}
    sizes: dict[str, int] = {}
    try:
        with registry() as reg:
            base = Image.from_base(BUSYBOX).with_source_folder(tree, dst="/opt/site-packages")
            for run in range(args.repeat):
                for compression in COMPRESSIONS if run % 2 == 0 else reversed(COMPRESSIONS):
                    image = base.clone(name=f"bench-zstd-{compression}-{uuid.uuid4().hex[:8]}", registry=reg.host)
                    daemon.wipe()
                    started = time.perf_counter()
                    built = flyte_images.build(image, builder="buildkit", compression=compression, quiet=True)
                    pushes[compression].append(time.perf_counter() - started)
                    size, kinds = layers_bytes(reg.host, built.uri)
                    if kinds != {compression}:
                        sys.exit(f"{built.uri} has {sorted(kinds)} layers, not {compression} only")
                    sizes[compression] = size
                    daemon.wipe()
                    pulls[compression].append(pull(builder, built.uri, home / f"pull-{run}-{compression}"))
    finally:
        daemon.stop()
        shutil.rmtree(home, ignore_errors=True)
    print(f"zstd benchmark: {args.mbytes} MB of site-packages on busybox, buildkitd + registry on loopback")
    print(f"median of {args.repeat} runs each (ratio: zstd to gzip), {os.cpu_count()} cores")
    for kind, times in (("push", pushes), ("pull", pulls)):
        print(line(f"{kind} gzip", times["gzip"]))
        print(line(f"{kind} zstd", times["zstd"], times["gzip"]))
    print(f"{'size gzip':<12} {sizes['gzip'] / 1e6:7.1f}MB")
    print(f"{'size zstd':<12} {sizes['zstd'] / 1e6:7.1f}MB  {sizes['zstd'] / sizes['gzip']:5.2f}x")
    print(json.dumps({"push": pushes, "pull": pulls, "bytes": sizes}))


if __name__ == "__main__":
    main()
