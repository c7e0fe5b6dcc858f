"""How to build: one frozen value from `build()`, `build_images()` and the CLI down to the routes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _config
from .._errors import ConfigError, InvalidLayerArgument
from .._formats.validation import platforms as check_platforms

if TYPE_CHECKING:
    from flyte_images.builders.base import Builder


@dataclass(frozen=True)
class BuildOptions:
    """The choices of one build (or of every image of a deploy), as `build()` takes them.

    `builder` is a backend's name, a backend, "append", or None for the configured one; `push`
    None pushes exactly the images that have a registry; `require_check` None is strict: an
    image whose registry cannot be asked fails before anything is built (a push there would
    fail after the build); False builds it anyway. `no_cache` makes BuildKit re-run every step
    instead of reusing its layer cache (the identifier, and so the skip rule, are unchanged).
    `tags` are more tags of the image's repository, pushed beside the content tag (never instead
    of it, never part of the identifier); an image that exists gets them without a build.
    `compression` is how pushed layers are compressed, "gzip" or "zstd" (None: the configured
    one, else gzip); the same contents, so not part of the identifier either."""

    dry_run: bool = False
    force: bool = False
    platform: tuple[str, ...] | None = None
    builder: str | Builder | object | None = None
    push: bool | None = None
    cache_from: tuple[str, ...] = ()
    cache_to: tuple[str, ...] = ()
    ca_bundle: Path | None = None
    quiet: bool = False
    require_check: bool | None = None
    cache: str | None = None
    no_cache: bool = False
    tags: tuple[str, ...] = ()
    compression: str | None = None

    @classmethod
    def of(
        cls,
        *,
        dry_run: bool = False,
        force: bool = False,
        platform: str | tuple[str, ...] | None = None,
        builder: object = None,
        push: bool | None = None,
        cache_from: tuple[str, ...] | list[str] = (),
        cache_to: tuple[str, ...] | list[str] = (),
        ca_bundle: Path | str | None = None,
        quiet: bool = False,
        require_check: bool | None = None,
        cache: str | None = None,
        no_cache: bool = False,
        tags: tuple[str, ...] | list[str] | str = (),
        compression: str | None = None,
    ) -> BuildOptions:
        """The options from `build()`'s arguments, normalised once (platforms, tags and
        compression checked)."""
        if compression is not None and compression not in _config.COMPRESSIONS:
            raise ConfigError(
                f"compression={compression!r} is not one of {', '.join(_config.COMPRESSIONS)}: give "
                "compression='zstd' (smaller layers that decompress faster) or 'gzip' (the default)"
            )
        return cls(
            dry_run=dry_run,
            force=force,
            platform=None if platform is None else check_platforms(platform),
            builder=builder,
            push=push,
            cache_from=tuple(cache_from),
            cache_to=tuple(cache_to),
            ca_bundle=Path(ca_bundle) if ca_bundle else None,
            quiet=quiet,
            require_check=require_check,
            cache=cache,
            no_cache=no_cache,
            tags=extra_tags(tags),
            compression=compression,
        )

    def ca_bundle_path(self) -> Path | None:
        """The CA bundle mounted into downloading steps: the one given, else the configured one
        (FLYTE_IMAGES_CA_BUNDLE or the config file), read when a build runs."""
        if self.ca_bundle is not None:
            return self.ca_bundle
        configured = _config.configured_ca_bundle()
        return Path(configured) if configured else None

    def layer_compression(self) -> str:
        """The compression of pushed layers: the one given, else FLYTE_IMAGES_COMPRESSION or the
        config file's `compression`, else gzip (read when a build runs)."""
        return self.compression or _config.configured_compression() or _config.COMPRESSIONS[0]

    def pushing(self, registry: str | None) -> bool:
        """Whether an image with `registry` (None: none of its own) is pushed."""
        if self.push is not None:
            return self.push
        return bool(registry or _config.configured_registry())

    @property
    def strict(self) -> bool:
        """Fail (not build anyway) when a registry cannot say whether an image exists."""
        return self.require_check is not False


_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")


def extra_tags(tags: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    """`tags` checked: names of tags of the image's repository (`latest`, `v1.2`), or full
    references elsewhere (`ghcr.io/acme/app:stable`)."""
    names = (tags,) if isinstance(tags, str) else tuple(tags)
    for name in names:
        if not isinstance(name, str) or not (_TAG.match(name) or _full_reference(name)):
            raise InvalidLayerArgument(
                "tags",
                f"{name!r} is neither a tag name (1 to 128 letters, digits, '_', '.' or '-', not starting with "
                "'.' or '-', such as 'latest') nor a full reference with a tag (such as ghcr.io/acme/app:stable)",
            )
    return tuple(dict.fromkeys(names))


def _full_reference(name: str) -> bool:
    if "/" not in name or "@" in name or not name.isprintable() or any(c.isspace() for c in name):
        return False
    path, _, tag = name.rpartition(":")
    return "/" in path and bool(_TAG.match(tag)) and "/" not in tag
