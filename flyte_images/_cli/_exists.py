"""`flyte-images exists REF...`: are these images in their registries?"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._errors import FlyteImagesError
from .._interrupt import run_coroutine
from ._common import add_command

EXIT_CANNOT_TELL = 2

_HELP = """\
Ask each image's registry whether the reference exists (with every --platform, when given).
Credentials come from Docker's config (credHelpers, credsStore, auths) and, for Amazon ECR,
from boto3. A registry that cannot be asked is reported as unknown, never as existing.

Each check gives up after FLYTE_IMAGES_REGISTRY_TIMEOUT seconds (default 20) and reports unknown.

exit codes: 0 every image exists, 1 some are missing, 2 some could not be checked

examples:
  flyte-images exists ghcr.io/acme/app:1a2b3c
  flyte-images exists 127.0.0.1:5000/app:dev --platform linux/amd64 --platform linux/arm64
  flyte-images exists $(cat refs.txt) --json
"""


def register(commands: Any) -> None:
    parser = add_command(commands, "exists", "check whether images exist in their registries", _HELP)
    parser.add_argument("references", nargs="+", metavar="REF")
    parser.add_argument("--platform", action="append", help="also require this platform (repeatable)")
    parser.add_argument("--json", action="store_true", help="one JSON document with every answer")
    parser.add_argument("--concurrency", type=int, default=16, help="checks in flight at once (default 16)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._config import insecure_registries
    from .._registry import check_many
    from .._registry.redact import by_shape, one_line

    try:
        results = run_coroutine(
            check_many(
                args.references,
                args.platform,
                insecure=insecure_registries(),
                concurrency=max(1, args.concurrency),
            )
        )
    except FlyteImagesError as exc:  # configuration (a bad setting), before any image was asked about
        print(f"error: {one_line(by_shape(str(exc)))}", file=sys.stderr)
        return EXIT_CANNOT_TELL
    except Exception as exc:  # "cannot tell" is the honest answer; a traceback helps no one here
        print(f"error: cannot check the images ({type(exc).__name__}: {one_line(by_shape(str(exc)))})", file=sys.stderr)
        return EXIT_CANNOT_TELL
    if args.json:
        import json

        print(json.dumps({"images": [r.to_json() for r in results]}, indent=2))
    else:
        for r in results:
            detail = r.digest or ""
            if r.platforms:
                detail += f" ({', '.join(r.platforms)})"
            if r.reason:
                detail += f" {r.reason}" if detail else r.reason
            print(f"{r.state:<8} {r.reference}  {detail}".rstrip())
    if any(r.state == "unknown" for r in results):
        return EXIT_CANNOT_TELL
    return 1 if any(r.state == "missing" for r in results) else 0
