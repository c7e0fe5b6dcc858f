"""Settings the engine reads at build time: the push registry and named image references.

Resolution order for the registry of an image that names none: the value given to `init(...)`,
then the `FLYTE_IMAGES_REGISTRY` environment variable. Image references (`Image.from_ref_name`)
come from `init(images={...})` and from `FLYTE_IMAGES_REF_<NAME>` environment variables.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field

from ._errors import ConfigError

REGISTRY_ENV = "FLYTE_IMAGES_REGISTRY"
REF_ENV_PREFIX = "FLYTE_IMAGES_REF_"


@dataclass
class Settings:
    registry: str | None = None
    images: dict[str, str] = field(default_factory=dict)
    image_builder: str = "local"


_lock = threading.Lock()
_settings = Settings()


def current() -> Settings:
    return _settings


def update(**changes: object) -> None:
    """Replace the given settings (used by `init`)."""
    global _settings  # noqa: PLW0603 - one settings object per process, as the SDK has
    with _lock:
        values = {**_settings.__dict__, **{k: v for k, v in changes.items() if v is not None}}
        _settings = Settings(**values)


def configured_registry() -> str | None:
    return _settings.registry or os.environ.get(REGISTRY_ENV) or None


def _env_refs() -> dict[str, str]:
    refs = {}
    for key, value in os.environ.items():
        if key.startswith(REF_ENV_PREFIX) and value:
            refs[key[len(REF_ENV_PREFIX) :].lower().replace("_", "-")] = value
    return refs


def known_refs() -> dict[str, str]:
    return {**_env_refs(), **_settings.images}


def resolve_ref(name: str) -> str:
    refs = known_refs()
    if name in refs:
        return refs[name]
    known = ", ".join(sorted(refs)) or "none"
    env_name = REF_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    raise ConfigError(
        f"no image reference named {name!r} (known: {known}); define it with "
        f"flyte_images.init(images={{{name!r}: 'registry/repo:tag'}}) or the {env_name} environment variable"
    )
