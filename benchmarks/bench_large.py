"""Large files: the identifier of a tree holding 1 GB in 16 files of 64 MB (model weights).

Prints, in one run on the same tree (in the page cache):
  floor        read + SHA-256 of every file, one after the other on one core
  cold         our identifier with no stat cache (large files are hashed on every core)
  peak RSS     of a new process computing that identifier (streamed hashing: stays flat)
Goal: cold <= 0.7x the single-thread floor on a machine with 2+ cores; peak RSS < 100 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_identifier import best

_PROC = """
import resource, sys
from pathlib import Path
from flyte_images import Image
from flyte_images._plan.plan import image_digest
image = Image.from_debian_base(python_version=(3, 12), install_flyte=False).with_source_folder(Path(sys.argv[1]))
image_digest(image, use_stat_cache=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_tree(root: Path, files: int, size: int) -> None:
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == f"{files}:{size}":
        return
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    for index in range(files):
        with open(root / f"weights-{index:02d}.bin", "wb") as handle:
            for chunk in range(size >> 20):
                handle.write(block[chunk % 7 :] + block[: chunk % 7])
    marker.write_text(f"{files}:{size}")


def floor(root: Path) -> None:
    for path in sorted(root.glob("*.bin")):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--mbytes-each", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=Path(".bench/large"))
    args = parser.parse_args()
    root = args.tree.resolve()
    make_tree(root, args.files, args.mbytes_each << 20)
    os.environ["FLYTE_IMAGES_CACHE_DIR"] = tempfile.mkdtemp(prefix="fi-bench-cache-")
    from flyte_images import Image
    from flyte_images._plan.plan import image_digest

    image = Image.from_debian_base(python_version=(3, 12), install_flyte=False).with_source_folder(root)
    floor(root)  # into the page cache
    single = best(lambda: floor(root), args.repeat)
    cold = best(lambda: image_digest(image, use_stat_cache=False), args.repeat)
    out = subprocess.run([sys.executable, "-c", _PROC, str(root)], capture_output=True, text=True, check=True)
    rss_mb = int(out.stdout.strip()) / 1024
    total = args.files * args.mbytes_each
    print(f"large files: {args.files} x {args.mbytes_each} MB = {total} MB, {os.cpu_count()} cores")
    print(f"{'measure':<12} {'value':>9}  vs floor")
    print(f"{'floor':<12} {single:8.3f}s  1.00x")
    print(f"{'cold':<12} {cold:8.3f}s  {cold / single:5.2f}x")
    print(f"{'peak RSS':<12} {rss_mb:7.1f}MB")
    print(
        f"goals: cold <= 0.7x floor ({'met' if cold <= 0.7 * single else 'MISSED'}), "
        f"peak RSS < 100 MB ({'met' if rss_mb < 100 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
