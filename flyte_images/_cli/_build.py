"""`flyte-images build TARGET...`: build the Environments' and Images' images, skipping what exists."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._errors import LoadError
from ._common import add_command

_HELP = """\
Build the images of every Environment (with what they depend on) and every Image a target
defines, or of the one it names, each once, skipping those that already exist. Images with a
registry are pushed, the others are loaded into the local Docker engine. The uri of each image
is printed on stdout; progress goes to stderr.

TARGET is path/to/file.py, path/to/file.py:NAME, package.module or package.module:NAME.

A pushed image that ends in file layers (source files and folders, env vars, workdir) is made
in two parts: the engine part (everything before them) is built by the engine under its own tag
only when the registry lacks it, and the file layers are appended to it in the registry, with
no engine; a source edit then takes a few requests. `--builder docker` (or any engine backend)
builds the whole image with the engine instead.

exit codes: 0 everything exists or was built, 1 an image failed, 2 usage error or bad target

examples:
  flyte-images build workflows.py                      every environment and image in the file
  flyte-images build workflows.py --dry-run            the plan: what exists, what would build, why
  flyte-images build workflows.py --output image-cache.json --concurrency 4
  flyte-images build images.py:app --force --platform linux/arm64
  flyte-images build workflows.py --json               plan and results for CI (progress on stderr)
  flyte-images build workflows.py --progress plain     one line per step, with CACHED and times
  flyte-images build images.py:app --tag latest        also push registry/app:latest
  flyte-images build app.py --builder append           file layers appended (no engine if the base exists)
"""


def register(commands: Any) -> None:
    parser = add_command(commands, "build", "build the images of Environments and Images in a Python file", _HELP)
    parser.add_argument("targets", nargs="+", metavar="TARGET")
    parser.add_argument("--force", action="store_true", help="build even if an image already exists")
    parser.add_argument("--dry-run", action="store_true", help="check and plan; build nothing")
    parser.add_argument("--platform", action="append", help="override the platforms (repeatable)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--push", dest="push", action="store_true", default=None, help="push to the registry")
    mode.add_argument("--load", dest="push", action="store_false", help="load into the local engine")
    parser.add_argument(
        "--builder",
        help="append: insist on appending the trailing file layers in the registry; docker, buildkit, ...: "
        "build the whole image with that engine backend (default: append pushed images' file layers to their "
        "engine part, built by FLYTE_IMAGES_BUILDER or docker when missing)",
    )
    parser.add_argument("--ca-bundle", metavar="FILE", help="CA bundle for downloads inside the build")
    parser.add_argument(
        "--cache",
        choices=("registry", "none"),
        help="registry: keep BuildKit's layer cache in each image's repository, a tag per platform "
        "(buildcache-linux-amd64, ...), for CI runners",
    )
    parser.add_argument("--concurrency", type=int, default=2, help="builds at once (default 2)")
    parser.add_argument("--output", type=Path, metavar="FILE", help="write the image cache (JSON) to FILE")
    check = parser.add_mutually_exclusive_group()
    check.add_argument(
        "--require-check",
        dest="require_check",
        action="store_true",
        default=None,
        help="fail before any build when a registry cannot say whether an image exists (the default)",
    )
    check.add_argument(
        "--no-require-check",
        dest="require_check",
        action="store_false",
        help="build (and try to push) when a registry cannot be asked",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="run every step again instead of reusing BuildKit's layer cache"
    )
    parser.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="NAME",
        help="also push the image as REPOSITORY:NAME (repeatable); an image that exists is tagged without a build",
    )
    parser.add_argument(
        "--compression",
        choices=("gzip", "zstd"),
        help="of pushed layers (default FLYTE_IMAGES_COMPRESSION, else gzip); zstd pulls faster on containerd 1.5+ / "
        "Docker 23+ and needs a backend that writes it (buildkit, or appending)",
    )
    view = parser.add_mutually_exclusive_group()
    view.add_argument(
        "--progress",
        choices=("auto", "plain", "tty", "quiet"),
        default="auto",
        help="on stderr: tty a live table, plain one line per step (CI logs), quiet nothing; "
        "auto (the default) is tty on a terminal, else plain",
    )
    view.add_argument("--quiet", "-q", dest="progress", action="store_const", const="quiet", help="--progress quiet")
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON document with the plan and results on stdout (progress stays on stderr)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os

    from .._build import BuildOptions
    from .._build.deploy import build_named
    from .._build.progress import Board
    from .._imagecache import ImagesFailedError

    _check_arguments(args)
    if args.ca_bundle:
        os.environ["FLYTE_IMAGES_CA_BUNDLE"] = args.ca_bundle
    targets = _selected(args.targets)
    envs = _closure(tuple(t for _n, t in targets if not _is_image(t)))
    named = [(env.name, env) for env in envs] + [(n, t) for n, t in targets if _is_image(t)]
    options = BuildOptions.of(
        dry_run=args.dry_run,
        force=args.force,
        platform=tuple(args.platform) if args.platform else None,
        builder=args.builder,
        push=args.push,
        require_check=args.require_check,
        cache=args.cache or None,
        no_cache=args.no_cache,
        tags=args.tags,
        compression=args.compression,
    )
    board = Board(sys.stderr, args.progress)
    try:
        with board, _warnings_as_lines():
            cache = build_named(named, None, args.concurrency, options, board)
        code = 0
    except ImagesFailedError as exc:
        cache, code = exc.cache, 1
        _failures(exc)
    if args.output:
        _write_atomically(args.output, cache.to_json())
    _report(cache, args.json, board)
    return code


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """A warning during the builds (a cache that cannot be exported) as one `warning: ...` line
    on stderr, not Python's file-and-line form."""
    import warnings

    def show(message: Warning | str, *_args: object, **_kwargs: object) -> None:
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _is_image(value: object) -> bool:
    from .._image.image import Image

    return isinstance(value, Image)


def _selected(target_args: list[str]) -> list[tuple[str, Any]]:
    """What `build` builds: every environment a target defines, and every Image no environment
    uses, except an Image that only serves as the start of another one (a shared base) unless
    the target names it. Environments are named by their name, Images by their variable."""
    from .._loader import definitions_of, split_target

    selected: list[tuple[str, Any]] = []
    for target in target_args:
        envs, images = definitions_of(target)
        used = _images_of([env for _v, env in envs])
        named = split_target(target)[1] is not None
        everything = used + [image for _n, image in images]
        for var, image in images:
            if any(image is u or image == u for u in used):
                continue
            if not named and any(_extends(other, image) for other in everything if other is not image):
                continue
            selected.append((var, image))
        selected += [(env.name, env) for _v, env in envs]
    return selected


def _closure(envs: tuple[Any, ...]) -> list[Any]:
    """The environments and everything they depend on (none without environments)."""
    if not envs:
        return []
    # Here, and only with environments to follow: the environment model (policies, resources)
    # is not needed to build the images of a file that defines only Images.
    from .._image.environment import environment_closure

    return environment_closure(envs)


def _images_of(envs: list[Any]) -> list[Any]:
    """The image each environment names (none without environments)."""
    if not envs:
        return []
    from .._image.environment import image_of  # here: see _closure

    return [image_of(env) for env in envs]


def _extends(image: object, base: object) -> bool:
    """Whether `image` is `base` with more layers added (so `base` is only its starting point)."""
    from .._image.image import Image

    if not (isinstance(image, Image) and isinstance(base, Image)) or image == base:
        return False
    n = len(base._layers)
    same_start = image.base_image == base.base_image and image.dockerfile is None and base.dockerfile is None
    return same_start and len(image._layers) > n and image._layers[:n] == base._layers


def _failures(exc: Any) -> None:
    """Each failure once, on stderr: the image, its uri, what failed and the hint."""
    cache = exc.cache
    for name in sorted(cache.status):
        if cache.status[name] == "failed":
            uri = f" ({exc.uris[name]})" if name in exc.uris else ""
            print(f"error: {name}{uri}: {cache.reasons[name]}", file=sys.stderr)


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse what cannot work before anything is loaded or built (usage errors, exit 2)."""
    from .._errors import InvalidImageError
    from .._formats.validation import platforms

    if args.output is not None and "\0" in str(args.output):
        raise LoadError(f"--output {str(args.output)!r} holds a NUL character, which no file name can")
    if args.output is not None and not args.output.parent.is_dir():
        raise LoadError(f"--output {args.output}: the folder {args.output.parent} does not exist; create it first")
    if args.output is not None and args.output.is_dir():
        raise LoadError(f"--output {args.output} is a folder; give a file name such as image-cache.json")
    if args.platform:
        try:
            platforms(tuple(args.platform))
        except InvalidImageError as exc:
            raise LoadError(f"--platform: {exc}") from None
    if args.concurrency < 1:
        raise LoadError(f"--concurrency {args.concurrency}: give 1 or more")
    if args.ca_bundle and not Path(args.ca_bundle).is_file():
        raise LoadError(f"--ca-bundle {args.ca_bundle} does not exist; give a PEM file of CA certificates")


def _report(cache: Any, as_json: bool, board: Any) -> None:
    """stdout: the uri of every image that exists now (or the JSON document), nothing else;
    stderr (unless quiet): one summary line per image, with its cached steps when it was built."""
    width = max((len(n) for n in cache.status), default=0)
    for name in sorted(cache.status):
        status, uri = cache.status[name], cache.image_lookup.get(name)
        if board.mode != "quiet":
            why = "see above" if status == "failed" else cache.reasons.get(name, "")
            cached = board.cached(name) if status == "built" else ""
            why = f"{why}, {cached}" if why and cached else why or cached
            print(f"{name:<{width}}  {status:<9}  {uri or '-'}  ({why})", file=sys.stderr)
        if uri is not None and not as_json:
            print(uri)
    if as_json:
        print(cache.to_json(), end="")


def _write_atomically(path: Path, text: str) -> None:
    from .._errors import FlyteImagesError

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        why = exc.strerror or str(exc)
        raise FlyteImagesError(f"--output {path}: cannot write it ({why}); nothing else failed") from None
