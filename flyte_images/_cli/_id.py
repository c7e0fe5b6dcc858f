"""`flyte-images id TARGET...`: the identifier and uri of Images defined in Python files."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .._errors import FlyteImagesError
from ._common import add_command

if TYPE_CHECKING:
    from .._image.image import Image

_HELP = """\
Print the content-hashed identifier and the uri of each Image a target defines.

TARGET is path/to/file.py, path/to/file.py:NAME, package.module or package.module:NAME.
Without NAME, every module-level Image of the target is shown.

examples:
  flyte-images id images.py
  flyte-images id images.py:trainer --json
  flyte-images id myproject.images --no-stat-cache
"""


def register(commands: Any) -> None:
    parser = add_command(commands, "id", "print the identifier and uri of Images in a Python file", _HELP)
    parser.add_argument("targets", nargs="+", metavar="TARGET")
    parser.add_argument("--json", action="store_true", help="print one JSON document for machines")
    parser.add_argument(
        "--no-stat-cache",
        action="store_true",
        help="hash every file afresh instead of trusting the stat cache",
    )
    parser.set_defaults(run=run)


def _describe(name: str, image: Image, use_cache: bool | None) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, "reference": image.is_reference}
    try:
        if image.is_reference:
            row.update(identifier=None, uri=image.uri)
        else:
            from .._plan.plan import plan

            planned = plan(image, use_stat_cache=use_cache)
            row.update(identifier=planned.identifier, uri=planned.uri)
    except FlyteImagesError as exc:
        row["error"] = str(exc)
    return row


def run(args: argparse.Namespace) -> int:
    from .._loader import images_of

    use_cache = False if args.no_stat_cache else None
    rows = []
    for target in args.targets:
        for name, image in images_of(target):
            rows.append({"target": target, **_describe(name, image, use_cache)})
    failed = [r for r in rows if "error" in r]
    if args.json:
        import json

        print(json.dumps({"images": rows}, indent=2))
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            if "error" in r:
                print(f"{r['name']:<{width}}  error: {r['error']}", file=sys.stderr)
            else:
                note = "  (existing image, not built)" if r["reference"] else ""
                print(f"{r['name']:<{width}}  {r['uri']}{note}")
    return 1 if failed else 0
