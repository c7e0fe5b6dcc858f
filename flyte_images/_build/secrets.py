"""Where a build's secrets come from: the host environment or files, index URLs with
credentials written to private files, and the CA bundle. Values are kept only to redact them
from build output; they never reach a layer, the identifier, a log or a message."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import BuildError, SecretNotFoundError
from .._formats.dockerfile import CA_SECRET_ID
from .._image.secret import unusable_secrets
from .._plan.plan import BuildPlan

if TYPE_CHECKING:
    from flyte_images.builders.base import SecretSource

CA_BUNDLE_ENV = "FLYTE_IMAGES_CA_BUNDLE"
MIN_SECRET_LENGTH = 3


@dataclass(frozen=True)
class Secrets:
    sources: tuple[SecretSource, ...]
    values: tuple[str, ...]  # only to redact them from build output


def _secret_value(secret: object, var: str) -> tuple[SecretSource, str]:
    from flyte_images.builders.base import SecretSource

    key = getattr(secret, "key", var)
    build_id = getattr(secret, "build_id", var)
    if os.environ.get(var):
        source, value = SecretSource(id=build_id, env=var), os.environ[var]
    elif os.environ.get(f"{var}_FILE"):
        path = Path(os.environ[f"{var}_FILE"])
        if not path.is_file():
            raise SecretNotFoundError(f"secret {key!r}: {var}_FILE names {path}, which does not exist")
        source, value = SecretSource(id=build_id, file=path), path.read_text(errors="replace")
    else:
        raise SecretNotFoundError(
            f"secret {key!r} has no value on this machine: set the environment variable {var}, "
            f"or {var}_FILE to a file holding it"
        )
    if len(value.strip()) < MIN_SECRET_LENGTH:
        raise SecretNotFoundError(
            f"secret {key!r} (from {var}) is shorter than {MIN_SECRET_LENGTH} characters; a value that "
            "short cannot be kept out of build logs (it would match ordinary output). Use the real value"
        )
    return source, value


def secret_sources(built: BuildPlan, ca_bundle: Path | None, private: Path) -> Secrets:
    """Where every build secret comes from. Index URLs with credentials are written to files in
    `private` (mode 600, removed after the build) and mounted like any other secret."""
    from urllib.parse import unquote, urlsplit

    from flyte_images.builders.base import SecretSource

    sources: list[SecretSource] = []
    values: list[str] = []
    unusable_secrets(built.secrets)
    for secret in built.secrets:
        source, value = _secret_value(secret, secret.source_env_var)
        sources.append(source)
        values.append(value)
    for secret_id, url in built.url_secrets:
        private.mkdir(mode=0o700, exist_ok=True)
        path = private / secret_id
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(url)
        sources.append(SecretSource(id=secret_id, file=path))
        parts = urlsplit(url)
        values += [url, *(v for v in (parts.password, unquote(parts.password or "")) if v)]
    if ca_bundle is not None:
        if not ca_bundle.is_file():
            raise BuildError(f"CA bundle {ca_bundle} does not exist (from ca_bundle= or {CA_BUNDLE_ENV})")
        sources.append(SecretSource(id=CA_SECRET_ID, file=ca_bundle))
    return Secrets(tuple(sources), tuple(values))
