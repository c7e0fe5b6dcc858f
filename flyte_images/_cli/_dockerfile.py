"""`flyte-images dockerfile TARGET`: the Dockerfile an Image renders to, and optionally its context."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .._errors import LoadError
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
        default=None,  # read when the command runs: a parser may outlive the environment it was built in
        help="render the CA-bundle secret mounts (default: on when FLYTE_IMAGES_CA_BUNDLE is set)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._formats.dockerfile import RenderOptions
    from .._loader import images_of
    from .._plan.plan import plan, staged_plan

    images = [(n, i) for n, i in images_of(args.target) if not i.is_reference]
    if not images:
        raise LoadError(f"{args.target} names only existing images (used as is): there is no Dockerfile to show")
    if len(images) > 1 and args.context is not None:
        names = ", ".join(name for name, _ in images)
        raise LoadError(f"{args.target} defines several images ({names}); name one as {args.target}:NAME")
    if args.context is not None and args.context.exists() and not args.context.is_dir():
        raise LoadError(f"--context {args.context} is a file; give a new or empty folder")
    if args.context is not None and args.context.is_dir() and any(args.context.iterdir()):
        raise LoadError(f"--context {args.context} is not empty; give a new or empty folder")
    ca_bundle = args.ca_bundle if args.ca_bundle is not None else bool(os.environ.get("FLYTE_IMAGES_CA_BUNDLE"))
    options = RenderOptions(ca_bundle=ca_bundle)
    for name, image in images:
        if len(images) > 1:
            print(f"# ---- {name} ----")
        if args.context is None:
            sys.stdout.write(plan(image, options).dockerfile)
            continue
        with staged_plan(image, options) as staged:  # the same plan is printed and written
            sys.stdout.write(staged.dockerfile)
            _write_context(staged.context, staged.dockerfile, args.context)
        print(f"context written to {args.context}", file=sys.stderr)
    return 0


def _write_context(staged: Path | None, dockerfile: str, target: Path) -> None:
    """Copy the staged context to `target` as it is: symlinks as symlinks, modes and times
    kept. Without recursion (a list of folders still to copy), so a context of any depth copies;
    folders get their mode and times last, deepest first, since a read-only folder could not be
    filled and filling one changes its time."""
    import shutil

    assert staged is not None
    target.mkdir(exist_ok=True)
    folders = [(staged, target)]
    pending = [(staged, target)]
    while pending:
        source, copy = pending.pop()
        with os.scandir(source) as items:
            for item in items:
                into = copy / item.name
                if item.is_dir(follow_symlinks=False):
                    into.mkdir(0o700)
                    folders.append((Path(item.path), into))
                    pending.append((Path(item.path), into))
                else:
                    shutil.copy2(item.path, into, follow_symlinks=False)
    for source, copy in reversed(folders):
        shutil.copystat(source, copy)
    (target / "Dockerfile").write_text(dockerfile, encoding="utf-8")
