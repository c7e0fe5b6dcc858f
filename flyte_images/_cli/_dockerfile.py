"""`flyte-images dockerfile TARGET`: the Dockerfile an Image renders to, and optionally its context."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .._errors import LoadError
from .._image import Image
from .._loader import objects_of
from .._statcache import shared_stat_cache
from ._common import add_command

_HELP = """\
Print the Dockerfile an Image renders to. With --context DIR, also write the staged build
context (Dockerfile included) to DIR, so that `docker buildx build DIR` reproduces the build
by hand (pass the secrets the Dockerfile mounts with --secret).

examples:
  flyte-images dockerfile images.py:app
  flyte-images dockerfile images.py:app --context /tmp/app-context
  docker buildx build --load -t app:dev /tmp/app-context
"""


def register(commands: Any) -> None:
    parser = add_command(
        commands, "dockerfile", "print the Dockerfile of an Image (and write its build context)", _HELP
    )
    parser.add_argument("target", metavar="TARGET", help="path/to/file.py[:NAME] or package.module[:NAME]")
    parser.add_argument("--context", type=Path, metavar="DIR", help="write the staged build context to DIR")
    parser.add_argument(
        "--ca-bundle",
        action="store_true",
        default=bool(os.environ.get("FLYTE_IMAGES_CA_BUNDLE")),
        help="render the CA-bundle secret mounts (default: on when FLYTE_IMAGES_CA_BUNDLE is set)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._context import staged_context
    from .._render import RenderOptions, render

    images = objects_of(args.target, Image)
    if len(images) > 1 and args.context is not None:
        names = ", ".join(name for name, _ in images)
        raise LoadError(f"{args.target} defines several images ({names}); name one as {args.target}:NAME")
    for name, image in images:
        rendered = render(image, RenderOptions(ca_bundle=args.ca_bundle), shared_stat_cache())
        if len(images) > 1:
            print(f"# ---- {name} ----")
        sys.stdout.write(rendered.dockerfile)
        if args.context is not None:
            with staged_context(rendered, keep=args.context):
                pass
            print(f"context written to {args.context}", file=sys.stderr)
    return 0
