"""The `flyte-images` command line.

Exit codes (the same for every command):
  0  success
  1  an image is invalid or a step failed (missing file, bad configuration, failed build)
  2  usage error, or a target that cannot be loaded
  130 interrupted
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._errors import FlyteImagesError, LoadError
from .._version import __version__
from . import _build, _dockerfile, _exists, _explain, _id

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_EPILOG = """\
examples:
  flyte-images id images.py              identifier and uri of every Image in images.py
  flyte-images id images.py:app --json   one image, as JSON for CI
  flyte-images dockerfile images.py:app  the Dockerfile it renders to
  flyte-images build images.py:app       build it (skipped when it already exists)
  flyte-images exists ghcr.io/acme/app:1a2b  is it in the registry?
  flyte-images explain images.py:app     what the tag is made of, what changed since the last build

exit codes: 0 success, 1 an image is invalid or a step failed, 2 usage error or unloadable target
(`exists`: 0 all exist, 1 some missing, 2 some could not be checked)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flyte-images",
        description="Content-hashed container images for Python ML/AI workloads.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flyte-images {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _id.register(commands)
    _dockerfile.register(commands)
    _build.register(commands)
    _exists.register(commands)
    _explain.register(commands)
    return parser


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: locks are released and half-written files removed."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        code: int = args.run(args)
        return code
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FlyteImagesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
