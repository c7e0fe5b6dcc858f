"""The `flyte-images` command line.

Exit codes (the same for every command):
  0  success
  1  an image is invalid or a step failed (missing file, bad configuration, failed build)
  2  usage error, or a target that cannot be loaded
  130 interrupted
"""

from __future__ import annotations

import errno
import sys

from .._version import __version__

# Not `typing.TYPE_CHECKING`: importing typing costs every command ~5 ms before it starts.
TYPE_CHECKING = False

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_EPILOG = """\
examples:
  flyte-images id images.py              identifier and uri of every Image in images.py
  flyte-images id images.py:app --json   one image, as JSON for CI
  flyte-images dockerfile images.py:app  the Dockerfile it renders to
  flyte-images build images.py:app       build it (skipped when it already exists)
  flyte-images exists ghcr.io/acme/app:1a2b  is it in the registry?
  flyte-images explain images.py:app     what the tag is made of, what changed since the last build
  flyte-images cache prune --older-than 14  remove what the tool keeps and did not use for 14 days
  flyte-images doctor                    is everything a build needs there? (engine, buildx, registry, ...)
  source <(flyte-images completion bash)  tab completion for bash (also zsh)

exit codes: 0 success, 1 an image is invalid or a step failed, 2 usage error or unloadable target
(`exists`: 0 all exist, 1 some missing, 2 some could not be checked)
"""


# Every command, in the order --help lists them, and the module that defines it.
_COMMANDS = {
    "id": "_id",
    "dockerfile": "_dockerfile",
    "build": "_build",
    "exists": "_exists",
    "explain": "_explain",
    "cache": "_cache",
    "doctor": "_doctor",
    "completion": "_completion",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with `only`, the parser of that command alone is set up (and
    only its module imported): `main` asks for that when the first argument names a command,
    since then no other command's arguments can be parsed and no message lists them."""
    import argparse
    import importlib

    parser = argparse.ArgumentParser(
        prog="flyte-images",
        description="Content-hashed container images for Python ML/AI workloads.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flyte-images {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(f"{__name__}.{module}").register(commands)
    return parser


# What a write to stdout fails with when its reader went away or its disk is full: the
# command's result is lost, so the exit status must say it failed.
_OUTPUT_ERRNOS = frozenset({errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def _complain(message: str) -> None:
    if sys.stderr is not None:
        print(f"error: {message}", file=sys.stderr)


def _detach_stdout() -> None:
    """Point fd 1 at /dev/null, so that the interpreter's own flush at exit cannot fail again
    and print a traceback of its own."""
    import os

    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: locks are released and half-written files removed."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; without `argv` (as the `flyte-images` program), with `sys.argv`."""
    code = _main(sys.argv[1:] if argv is None else list(argv))
    if argv is None:
        import gc

        # The program ends when this returns. The interpreter's collections at exit would walk
        # every object of the hundreds of modules a build loads (about 40 ms of an append) only
        # to free memory the process gives back anyway; frozen objects are left to the exit.
        # (Called with `argv`, as a library or test calls it, the process goes on: no freeze.)
        gc.freeze()
    return code


def _main(arguments: list[str]) -> int:
    import signal
    import threading

    from .._errors import FlyteImagesError, LoadError

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    # This process never runs httpx's own command line, which `import httpx` loads whenever
    # click is installed (with rich and pygments: about 70 ms of every registry command).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    parser = build_parser(arguments[0] if arguments and arguments[0] in _COMMANDS else None)
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if sys.stdout is None:  # started with stdout closed (`>&-`): nothing could be printed
        _complain("standard output is closed; give the command somewhere to write (a file, a pipe or /dev/null)")
        return EXIT_FAILED
    try:
        code: int = args.run(args)
        sys.stdout.flush()  # a closed pipe or a full disk shows here, not at interpreter exit
        return code
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRNOS:
            raise
        _detach_stdout()
        _complain(f"cannot write to standard output: {exc.strerror or exc}")
        return EXIT_FAILED
    except LoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FlyteImagesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
