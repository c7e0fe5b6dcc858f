"""`flyte-images build TARGET...`: build the Images a Python file defines, skipping what exists."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .._errors import FlyteImagesError
from .._image import Image
from .._loader import objects_of

_HELP = """\
Build every Image a target defines (or the one it names), unless it already exists.
The uri of each image is printed on stdout, one per line; build progress goes to stderr.
Images with a registry are pushed, the others are loaded into the local Docker engine.

examples:
  flyte-images build images.py:app
  flyte-images build images.py --dry-run             what would be built, and the Dockerfiles
  flyte-images build images.py:app --force --platform linux/arm64
  flyte-images build images.py --json > build.json   machine-readable results for CI
"""


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "build",
        help="build the Images in a Python file (skipping those that exist)",
        description=_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("targets", nargs="+", metavar="TARGET")
    parser.add_argument("--force", action="store_true", help="build even if the image already exists")
    parser.add_argument("--dry-run", action="store_true", help="render and report; build nothing")
    parser.add_argument("--platform", action="append", help="override the platforms (repeatable)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--push", dest="push", action="store_true", default=None, help="push to the registry")
    mode.add_argument("--load", dest="push", action="store_false", help="load into the local engine")
    parser.add_argument("--builder", help="build backend (default: docker, or FLYTE_IMAGES_BUILDER)")
    parser.add_argument("--ca-bundle", metavar="FILE", help="CA bundle for downloads inside the build")
    check = parser.add_mutually_exclusive_group()
    check.add_argument(
        "--require-check",
        dest="require_check",
        action="store_true",
        default=None,
        help="fail when a registry cannot say whether an image exists (default when CI is set)",
    )
    check.add_argument("--no-require-check", dest="require_check", action="store_false", help="build when unsure")
    parser.add_argument("--quiet", "-q", action="store_true", help="no build progress")
    parser.add_argument("--json", action="store_true", help="one JSON document with every result")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._build import build

    rows: list[dict[str, Any]] = []
    for target in args.targets:
        for name, image in objects_of(target, Image):
            row: dict[str, Any] = {"target": target, "name": name}
            try:
                result = build(
                    image,
                    dry_run=args.dry_run,
                    force=args.force,
                    platform=tuple(args.platform) if args.platform else None,
                    builder=args.builder,
                    push=args.push,
                    ca_bundle=args.ca_bundle,
                    quiet=args.quiet or args.json,
                    require_check=args.require_check,
                )
            except FlyteImagesError as exc:
                row["error"] = str(exc)
                print(f"error: {name}: {exc}", file=sys.stderr)
            else:
                row.update(uri=result.uri, built=result.built, reason=result.reason, digest=result.digest)
                if args.dry_run:
                    row["dockerfile"] = result.dockerfile
                if not args.json:
                    note = f"  # {result.reason}" if result.reason else ""
                    print(f"{result.uri}{note}")
                    if args.dry_run and result.dockerfile:
                        print(result.dockerfile, file=sys.stderr)
            rows.append(row)
    if args.json:
        print(json.dumps({"images": rows}, indent=2))
    return 1 if any("error" in r for r in rows) else 0
