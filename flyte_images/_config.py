"""Settings the engine reads (README.md, Configuration, lists each with its environment variable
and config file key).

Precedence, highest first: `init(...)` arguments, environment variables (ours, then the Flyte
SDK's FLYTE_IMAGE_REGISTRY and FLYTE_IMAGE_BUILDER), the config file, built-in defaults. The
config file is TOML, the first of: the path given to `init_from_config`, FLYTE_IMAGES_CONFIG,
`flyte-images.toml` or a `[tool.flyte-images]` table of `pyproject.toml` in the current folder or
a parent, `$XDG_CONFIG_HOME/flyte-images/config.toml`.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ._errors import ConfigError, InvalidLayerArgument
from ._formats import shapes as _shapes
from ._formats.validation import registry as check_registry

REGISTRY_ENV = "FLYTE_IMAGES_REGISTRY"
FLYTE_REGISTRY_ENV = "FLYTE_IMAGE_REGISTRY"  # the Flyte SDK's name, read after ours
BUILDER_ENV = "FLYTE_IMAGES_BUILDER"
FLYTE_BUILDER_ENV = "FLYTE_IMAGE_BUILDER"  # the Flyte SDK's name, read after ours
REF_ENV_PREFIX = "FLYTE_IMAGES_REF_"
CONFIG_ENV = "FLYTE_IMAGES_CONFIG"
# The buildkit backend's daemon address and client TLS files.
BUILDKIT_KEYS = ("buildkit_addr", "buildkit_ca", "buildkit_cert", "buildkit_key", "buildkit_server_name")
# The buildkit backend's pool of daemons ("ADDR=PLATFORM+PLATFORM,ADDR,..." or the config file's
# [[buildkit_nodes]] tables), checked by builders.pool, which knows a node's keys.
BUILDKIT_NODES_ENV = "FLYTE_IMAGES_BUILDKIT_NODES"
NODES_KEY = "buildkit_nodes"
CACHE_ENV = "FLYTE_IMAGES_CACHE"
# The Flyte SDK's docker builder takes a BuildKit cache from these two, only when both are set.
FLYTE_CACHE_FROM_ENV = "FLYTE_DOCKER_BUILDER_CACHE_FROM"
FLYTE_CACHE_TO_ENV = "FLYTE_DOCKER_BUILDER_CACHE_TO"
DEFAULT_BUILDKIT_ADDR = "unix:///run/buildkit/buildkitd.sock"  # buildkitd's own default
STAGING_CAP_ENV = "FLYTE_IMAGES_STAGING_CAP"
# The staging folders' default cap: dozens of images' contexts (a few MB to a few hundred each),
# a small share of a laptop's disk or a CI runner's free space (GitHub's hosted runners: ~14 GB).
DEFAULT_STAGING_CAP = 5 << 30
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)
_UNITS = {"b": 1, **{f"{p}b": 1000 ** (i + 1) for i, p in enumerate("kmgt")},
          **{f"{p}ib": 1 << 10 * (i + 1) for i, p in enumerate("kmgt")}}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class FileShape:
    """The config file's settings as `_shapes` reads them."""

    registry: str | None = None
    image_builder: str | None = None
    base_image: str | None = None
    ca_bundle: str | None = None
    images: dict[str, str] | None = None
    insecure_registries: list[str] | None = None
    buildkit_addr: str | None = None
    buildkit_ca: str | None = None
    buildkit_cert: str | None = None
    buildkit_key: str | None = None
    buildkit_server_name: str | None = None
    cache: str | None = None  # "registry": BuildKit's layer cache kept in the image's repository
    staging_cap: str | None = None  # a TOML integer is read as its digits
    compression: str | None = None  # of pushed layers: "gzip" or "zstd"
    buildx_builder: str | None = None  # the buildx builder the docker backend builds on


_KEYS = frozenset(f.name for f in fields(FileShape))
_ALL_KEYS = _KEYS | {NODES_KEY}


@dataclass(frozen=True, kw_only=True)
class Settings(FileShape):
    """The settings of init(...) or of the config file."""

    # A name, or a builder object from init(image_builder=obj).
    image_builder: str | object | None = None  # type: ignore[assignment]
    root_dir: str | None = None  # init(root_dir=...): whose .dockerignore applies to copies
    buildkit_nodes: object = None  # the config file's [[buildkit_nodes]] as read (builders.pool checks it)
    source: str = "defaults"  # where the file settings came from, for messages


_lock = threading.Lock()
_explicit = Settings()  # from init(...)
_file: Settings | None = None  # from the config file, read on first use


def reset() -> None:
    """Forget init(...) and the config file (tests; a new init)."""
    global _explicit, _file  # noqa: PLW0603 - process-wide settings, as the SDK keeps them
    with _lock:
        _explicit = Settings()
        _file = None


def set_explicit(**changes: Any) -> None:
    """Set the given settings (None leaves one as it is); images are merged."""
    global _explicit  # noqa: PLW0603
    with _lock:
        values = {k: v for k, v in changes.items() if v is not None}
        if "images" in values:
            values["images"] = {**(_explicit.images or {}), **values["images"]}
        _explicit = replace(_explicit, **values)


def _tomllib() -> Any:
    """The TOML reader, imported when a file is read (most runs read none)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    return tomllib


def find_config_file(start: Path | None = None) -> Path | None:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV} names {path}, which does not exist")
        return path
    here = (start or Path.cwd()).absolute()
    for folder in (here, *here.parents):
        if (folder / "flyte-images.toml").is_file():
            return folder / "flyte-images.toml"
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and b"[tool.flyte-images]" in pyproject.read_bytes():
            return pyproject
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    user = home / "flyte-images" / "config.toml"
    return user if user.is_file() else None


def read_config_file(path: Path) -> Settings:
    tomllib = _tomllib()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if path.name == "pyproject.toml":
        tool = data.get("tool")
        data = tool.get("flyte-images", {}) if isinstance(tool, dict) else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: [tool.flyte-images] must be a table of settings")
    if type(data.get("staging_cap")) is int:  # a number of bytes (never a bool)
        data = {**data, "staging_cap": str(data["staging_cap"])}
    unknown = sorted(set(data) - _ALL_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown settings {unknown}; known: {sorted(_ALL_KEYS)}")
    nodes = data.get(NODES_KEY)
    data = {k: v for k, v in data.items() if k != NODES_KEY}
    try:
        shape = _shapes.check(FileShape, data)
    except _shapes.Invalid as exc:
        raise ConfigError(f"{path}: {_wrong(exc.problems[0], data)}") from None
    return Settings(**{key: getattr(shape, key) for key in _KEYS}, buildkit_nodes=nodes, source=str(path))


def _wrong(problem: _shapes.Problem, data: dict[str, Any]) -> str:
    """What is wrong with the setting a problem is in, and what it should be."""
    key = str(problem.path[0])
    if key == "images":
        return "[images] must map names to image references (strings)"
    if key == "insecure_registries":
        return "insecure_registries must be a list of host[:port] strings"
    if key == "staging_cap":
        return f'staging_cap must be a size such as "2GiB" or a number of bytes, got {data[key]!r}'
    return f"{key} must be a string, got {data[key]!r}"


def _from_file() -> Settings:
    global _file  # noqa: PLW0603
    if _file is None:
        path = find_config_file()
        loaded = read_config_file(path) if path is not None else Settings()
        with _lock:
            _file = loaded
    return _file


def load_file(path: Path) -> None:
    """Use this config file instead of the one that would be found."""
    global _file  # noqa: PLW0603
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    loaded = read_config_file(path)
    with _lock:
        _file = loaded


def _env(*names: str) -> str | None:
    """The first of these environment variables that is set (ours first, then the SDK's)."""
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def _pick(name: str, *envs: str) -> str | None:
    value = getattr(_explicit, name) or _env(*envs) or getattr(_from_file(), name)
    return str(value) if value else None


def configured_registry() -> str | None:
    """The registry from init(...), FLYTE_IMAGES_REGISTRY or the config file, checked like an argument."""
    value = _pick("registry", REGISTRY_ENV, FLYTE_REGISTRY_ENV)
    if value is None:
        return None
    try:
        return check_registry("registry", value)
    except InvalidLayerArgument as exc:
        source = (
            "init(image_registry=...)" if _explicit.registry
            else REGISTRY_ENV if os.environ.get(REGISTRY_ENV)
            else FLYTE_REGISTRY_ENV if os.environ.get(FLYTE_REGISTRY_ENV)
            else _from_file().source
        )  # fmt: skip
        raise ConfigError(f"the registry set in {source} is not usable: {exc}") from None


def configured_builder() -> str | None:
    """The builder's name from init(...), the environment or the config file; None when
    init(...) was given a builder object (see `configured_builder_object`)."""
    return None if configured_builder_object() is not None else _pick("image_builder", BUILDER_ENV, FLYTE_BUILDER_ENV)


def configured_builder_object() -> object | None:
    """The builder object given to init(image_builder=...), if one was (not a name)."""
    value = _explicit.image_builder
    return None if value is None or isinstance(value, str) else value


def configured_cache() -> str | None:
    """The layer cache setting: "registry", "none", or unset (FLYTE_IMAGES_CACHE or `cache`)."""
    value = _pick("cache", CACHE_ENV)
    if value is not None and value not in ("registry", "none"):
        raise ConfigError(f"cache={value!r} (from {CACHE_ENV} or the config file) is not 'registry' or 'none'")
    return value


BUILDX_BUILDER_ENV = "FLYTE_IMAGES_BUILDX_BUILDER"
_BUILDX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")


def configured_buildx_builder() -> str | None:
    """The buildx builder the docker backend hands its builds to (FLYTE_IMAGES_BUILDX_BUILDER or
    the config file's `buildx_builder`): one made with `docker buildx create`, such as a
    kubernetes-driver builder with its own replicas and load balancing. None: buildx's own
    choice (BUILDX_BUILDER, `docker buildx use`, else the engine's)."""
    value = _pick("buildx_builder", BUILDX_BUILDER_ENV)
    if value is not None and not _BUILDX_NAME.match(value):
        in_env = os.environ.get(BUILDX_BUILDER_ENV)
        source = BUILDX_BUILDER_ENV if in_env else f"buildx_builder in {_from_file().source}"
        raise ConfigError(
            f"{source} is {value!r}, which is not a buildx builder name: give the NAME of `docker buildx ls` "
            "(letters, digits, '.', '_' and '-')"
        )
    return value


COMPRESSION_ENV = "FLYTE_IMAGES_COMPRESSION"
# How pushed layers are compressed, the first the default: gzip every puller reads; zstd
# decompresses several times faster and is smaller, read by containerd 1.5+ / Docker 23+.
COMPRESSIONS = ("gzip", "zstd")


def configured_compression() -> str | None:
    """The layer compression from FLYTE_IMAGES_COMPRESSION or the config file's `compression`;
    None when neither sets it."""
    value = _pick("compression", COMPRESSION_ENV)
    if value is not None and value not in COMPRESSIONS:
        source = COMPRESSION_ENV if os.environ.get(COMPRESSION_ENV) else f"compression in {_from_file().source}"
        raise ConfigError(f"{source} is {value!r}, not one of {', '.join(COMPRESSIONS)}: give gzip or zstd")
    return value


def staging_cap() -> int | None:
    """The staging folders' size cap in bytes, None for no cap: FLYTE_IMAGES_STAGING_CAP or the
    config file's `staging_cap` (a size such as 2GiB or 500MB, bytes, or 0 / off), else 5 GiB."""
    value, source = os.environ.get(STAGING_CAP_ENV, "").strip(), STAGING_CAP_ENV
    if not value:
        value, source = (_from_file().staging_cap or "").strip(), f"staging_cap in {_from_file().source}"
    if not value:
        return DEFAULT_STAGING_CAP
    if value.lower() == "off":
        return None
    match = _SIZE.fullmatch(value)
    if match is None:
        raise ConfigError(
            f"{source} is {value!r}, not a size: give a number of bytes (5368709120), a number and a unit "
            "(2GiB, 500MB; B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), or 0 or off for no cap"
        )
    unit = _UNITS[(match[2] or "b").lower()]
    whole, _, fraction = match[1].partition(".")  # exact, however many digits
    return int(whole) * unit + int(fraction or 0) * unit // 10 ** len(fraction) or None


def flyte_builder_caches() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(cache_from, cache_to) from FLYTE_DOCKER_BUILDER_CACHE_FROM and _TO, as the Flyte SDK reads
    them: BuildKit cache specs (`type=registry,ref=...`), used only when both are set."""
    cache_from = os.environ.get(FLYTE_CACHE_FROM_ENV, "").strip()
    cache_to = os.environ.get(FLYTE_CACHE_TO_ENV, "").strip()
    if not (cache_from and cache_to):
        return (), ()
    for name, value in ((FLYTE_CACHE_FROM_ENV, cache_from), (FLYTE_CACHE_TO_ENV, cache_to)):
        if any(c in value for c in "\n\r\0"):
            raise ConfigError(
                f"{name} holds a line break or NUL: give one cache spec, e.g. type=registry,ref=REPO:cache"
            )
    return (cache_from,), (cache_to,)


def configured_root_dir() -> str | None:
    """The project root given to init(root_dir=...), if any."""
    return _explicit.root_dir


@dataclass(frozen=True)
class BuildkitSettings:
    """Where the buildkit backend's daemon is and the client TLS files for a tcp:// address."""

    addr: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None


def configured_buildkit() -> BuildkitSettings:
    """The buildkit_* settings: init(...), FLYTE_IMAGES_BUILDKIT_* or the config file, each key on
    its own; the address defaults to buildkitd's own unix socket."""
    values = {key.removeprefix("buildkit_"): _pick(key, f"FLYTE_IMAGES_{key.upper()}") for key in BUILDKIT_KEYS}
    return BuildkitSettings(addr=values.pop("addr") or DEFAULT_BUILDKIT_ADDR, **values)


def configured_buildkit_nodes() -> tuple[object, str] | None:
    """The buildkit pool's nodes as given, and where from: FLYTE_IMAGES_BUILDKIT_NODES (a string),
    else the config file's buildkit_nodes (a list of tables), unless a daemon address set above
    the file (init(...) or FLYTE_IMAGES_BUILDKIT_ADDR) takes its place; None: one daemon."""
    value = os.environ.get(BUILDKIT_NODES_ENV, "").strip()
    if value:
        return value, BUILDKIT_NODES_ENV
    if _explicit.buildkit_addr or os.environ.get("FLYTE_IMAGES_BUILDKIT_ADDR"):
        return None
    loaded = _from_file()
    return None if loaded.buildkit_nodes is None else (loaded.buildkit_nodes, f"{NODES_KEY} in {loaded.source}")


DEFAULT_BASE_IMAGE = "python:{python_version}-slim-bookworm"


def base_image_template() -> str:
    """The base of a built `from_debian_base(install_flyte=False)`, `{python_version}` unfilled."""
    return _pick("base_image", "FLYTE_IMAGES_BASE_IMAGE") or DEFAULT_BASE_IMAGE


def is_base_image_setting(reference: str) -> bool:
    """Whether `reference` (as the engine names it: docker.io/library/... for Docker Hub) is the
    base that `base_image_template` gives for some Python version: a missing one of those can be
    replaced through FLYTE_IMAGES_BASE_IMAGE, any other base cannot."""
    pattern = re.escape(base_image_template()).replace(re.escape("{python_version}"), r"[0-9]+\.[0-9]+")
    return re.fullmatch(f"(?:docker\\.io/(?:library/)?)?{pattern}", reference) is not None


def configured_ca_bundle() -> str | None:
    return _pick("ca_bundle", "FLYTE_IMAGES_CA_BUNDLE")


def insecure_registries() -> tuple[str, ...]:
    """Hosts reached over plain HTTP (loopback hosts always are, as Docker treats them)."""
    env = [h.strip() for h in os.environ.get("FLYTE_IMAGES_INSECURE_REGISTRIES", "").split(",") if h.strip()]
    return (*(_explicit.insecure_registries or ()), *env, *(_from_file().insecure_registries or ()))


def known_refs() -> dict[str, str]:
    env = {key[len(REF_ENV_PREFIX) :].lower().replace("_", "-"): value
           for key, value in os.environ.items() if key.startswith(REF_ENV_PREFIX) and value}  # fmt: skip
    return {**(_from_file().images or {}), **env, **(_explicit.images or {})}


def resolve_ref(name: str) -> str:
    refs = known_refs()
    if name in refs:
        return refs[name]
    known = ", ".join(sorted(refs)) or "none"
    env_name = REF_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    raise ConfigError(
        f"no image reference named {name!r} (known: {known}); define it with "
        f"flyte_images.init(images={{{name!r}: 'registry/repo:tag'}}), the {env_name} environment "
        "variable, or an [images] table in the config file"
    )
