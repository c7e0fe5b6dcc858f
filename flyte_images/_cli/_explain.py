"""`flyte-images explain TARGET`: what an image's tag is made of, and what changed since its last build."""

from __future__ import annotations

import argparse
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
    from .._append.part import file_part_start, has_file_part
    from .._image.image import Image
    from .._loader import images_of
    from .._plan.explain import breakdown, compare, previous_build
    from .._plan.plan import description_key, plan

    reports: list[dict[str, Any]] = []
    for target in args.targets:
        for name, image in images_of(target):
            if not isinstance(image, Image) or image.is_reference:
                continue
            current = breakdown(plan(image))
            previous, last = previous_build(description_key(image), current)
            split = file_part_start(image)
            reports.append(
                {
                    "name": name,
                    "uri": current.uri,
                    "built": last is not None,  # the current identifier was built (last_time)
                    "last_time": last.time if last else None,
                    "previous_uri": previous.uri if previous else None,
                    "previous_time": previous.time if previous else None,
                    "how": last.how if last else None,  # the path that build took, and why
                    # Layers from this position on are appended in the registry when pushed
                    # (null: none are; see `flyte-images build --help`).
                    "file_part_from": split + 1 if has_file_part(image) else None,
                    "parts": compare(previous, current),
                }
            )
    if args.json:
        import json

        print(json.dumps({"images": reports}, indent=2))
        return 0
    for report in reports:
        _print(report)
    return 0


def _print(report: dict[str, Any]) -> None:
    import datetime

    def when(stamp: float) -> str:
        return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")

    head = f"{report['name']}  {report['uri']}"
    previous = report["previous_uri"]
    if report["built"]:
        head += f"  (built {when(report['last_time'])}"
        head += f"; what changed since the build before, {previous.rsplit(':', 1)[1]}:)" if previous else ")"
    elif previous is None:
        head += "  (no earlier build recorded on this machine)"
    else:
        head += f"  (not built yet; changed since {previous.rsplit(':', 1)[1]}, built {when(report['previous_time'])}:)"
    print(head)
    if report["how"]:
        print(f"  how: {report['how']}")
    if report["file_part_from"] is not None:
        print(f"  layers {report['file_part_from']} on are file layers: appended in the registry when pushed")
    width = max(len(p["part"]) for p in report["parts"])
    for part in report["parts"]:
        status = "" if part["status"] in ("unchanged", "no record") else part["status"].upper()
        print(f"  {part['part']:<{width}}  {part['digest']}  {status:<8} {part['summary']}".rstrip())
        for change in part["changes"]:
            print(f"      {change}")
