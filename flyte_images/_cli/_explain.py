"""`flyte-images explain TARGET`: what an image's tag is made of, and what changed since its last build."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

from ._common import add_command

_HELP = """\
Show, for each image a target defines (Images, and the images of Environments), the parts its
identifier is made of: the base, the target Python and platforms, and each layer, with the
SHA-256 of each part. Against the last build of the same repository on this machine, mark
what changed and why: files added, removed or changed (with their digests), arguments changed.

examples:
  flyte-images explain images.py:app
  flyte-images explain workflows.py --json
"""


def register(commands: Any) -> None:
    parser = add_command(
        commands, "explain", "explain an image's identifier and what changed since its last build", _HELP
    )
    parser.add_argument("targets", nargs="+", metavar="TARGET")
    parser.add_argument("--json", action="store_true", help="one JSON document for machines")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._explain import breakdown, compare, last_record
    from .._image import Image
    from .._loader import images_of
    from .._plan import plan

    reports: list[dict[str, Any]] = []
    for target in args.targets:
        for name, image in images_of(target):
            if not isinstance(image, Image) or image.is_reference:
                continue
            current = breakdown(plan(image))
            previous = last_record(current.uri)
            reports.append(
                {
                    "name": name,
                    "uri": current.uri,
                    "previous_uri": previous.uri if previous else None,
                    "previous_time": previous.time if previous else None,
                    "parts": compare(previous, current),
                }
            )
    if args.json:
        print(json.dumps({"images": reports}, indent=2))
        return 0
    for report in reports:
        _print(report)
    return 0


def _print(report: dict[str, Any]) -> None:
    head = f"{report['name']}  {report['uri']}"
    if report["previous_uri"] is None:
        head += "  (no earlier build recorded on this machine)"
    elif report["previous_uri"] == report["uri"]:
        head += "  (unchanged since the last build)"
    else:
        when = datetime.datetime.fromtimestamp(report["previous_time"]).strftime("%Y-%m-%d %H:%M")
        head += f"  (last built {when} as {report['previous_uri'].rsplit(':', 1)[1]})"
    print(head)
    width = max(len(p["part"]) for p in report["parts"])
    for part in report["parts"]:
        status = "" if part["status"] in ("unchanged", "no record") else part["status"].upper()
        print(f"  {part['part']:<{width}}  {part['digest']}  {status:<8} {part['summary']}".rstrip())
        for change in part["changes"]:
            print(f"      {change}")
