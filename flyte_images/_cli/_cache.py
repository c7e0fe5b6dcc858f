"""`flyte-images cache [prune]`: what the tool keeps on this machine, and removing it."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_command

_HELP = """\
List what flyte-images keeps on this machine, per kind with its count and disk use: staging
folders (each image's build context), the uv binaries copied into images, the stat cache and
tree memos (file digests), build records (for `explain`), push records, registry documents,
answers about base images' files, and the buildx builders the buildkit backend created
(`flyte-images-<hash>`, in buildx's config folder). Everything but the builders is in the cache
folder: FLYTE_IMAGES_CACHE_DIR, else $XDG_CACHE_HOME/flyte-images, else ~/.cache/flyte-images.

`cache prune` removes them: everything, or with --older-than DAYS what was not used for that
long. Only names the tool makes are listed or removed, never through a symlink; a staging folder
a running build holds is kept. Each is made again when needed (a builder by the next buildkit
build, uv by the next build that installs Python packages).

examples:
  flyte-images cache
  flyte-images cache --json
  flyte-images cache prune --older-than 14
  flyte-images cache prune --dry-run
  flyte-images cache prune
"""


def register(commands: Any) -> None:
    parser = add_command(commands, "cache", "list what flyte-images keeps on this machine, or prune it", _HELP)
    parser.add_argument("--json", action="store_true", help="one JSON document: per kind and per item")
    parser.set_defaults(run=run)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    prune = actions.add_parser(
        "prune",
        help="remove what is kept (all, or what was not used for --older-than DAYS)",
        description="Remove what `flyte-images cache` lists: everything, or what was not used for DAYS days.",
    )
    prune.add_argument(
        "--older-than", type=_days, metavar="DAYS", help="only what was last used at least DAYS days ago (e.g. 14, 0.5)"
    )
    prune.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
    prune.add_argument("--json", action="store_true", help="one JSON document with what was removed and kept")


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):  # also refuses NaN
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days; give one such as 14 or 0.5")
    return value


def size_text(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> int:
    import json

    from .. import _config
    from .._files import inventory

    if args.action == "prune":
        pruned = inventory.prune(args.older_than, dry_run=args.dry_run)
        if args.json:
            print(json.dumps({"dry_run": args.dry_run, **pruned.to_json()}, indent=2))
        else:
            _print_pruned(pruned, args.dry_run)
        return 1 if pruned.failed else 0
    found = inventory.inventory()
    if args.json:
        print(json.dumps(found.to_json(), indent=2))
        return 0
    print(f"cache folder: {found.cache_dir}")
    rows = found.summary()
    width = max(len(r["label"]) for r in rows)
    for row in rows:
        where = f"  (in {found.buildx_dir})" if row["kind"] == inventory.BUILDERS and row["count"] else ""
        print(f"  {row['label']:<{width}}  {row['count']:>6}  {size_text(row['bytes']):>9}{where}")
    total = sum(r["bytes"] for r in rows)
    print(f"  {'total':<{width}}  {len(found.items):>6}  {size_text(total):>9}")
    cap = _config.staging_cap()
    print(f"staging cap: {'off' if cap is None else size_text(cap)} (FLYTE_IMAGES_STAGING_CAP or staging_cap)")
    return 0


def _print_pruned(pruned: Any, dry_run: bool) -> None:
    verb = "would remove" if dry_run else "removed"
    for item in pruned.removed:
        print(f"{verb} {item.name}  {size_text(item.size)}")
    for item, why in pruned.failed:
        print(f"kept {item.name}: {why}")
    freed = sum(i.size for i in pruned.removed)
    print(
        f"{verb} {len(pruned.removed)} item(s), {size_text(freed)}"
        + (f"; kept {len(pruned.failed)}" if pruned.failed else "")
    )
