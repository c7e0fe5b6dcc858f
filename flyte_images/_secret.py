"""`Secret`: a reference to a secret value, never the value itself."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ._encoding import sha256_hex
from ._errors import InvalidLayerArgument

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Secret:
    """A secret mounted into one build step (or a task), by reference.

    The value comes, at build time, from the host environment variable named after the group
    and key (upper-cased, `-` and `.` become `_`: `Secret("hf-token")` reads `HF_TOKEN`,
    `Secret("token", group="github")` reads `GITHUB_TOKEN`). With `mount` the secret is a file
    at that path inside the step; otherwise it is an environment variable of that step, named
    `as_env_var` or like the host variable. The value is never written to a Dockerfile, an
    image layer, an identifier, a log or an error message.

    Example:
        Image.from_debian_base().with_pip_packages(
            "private-pkg", secret_mounts=[Secret("pip-token", as_env_var="PIP_TOKEN")]
        )
    """

    key: str
    group: str | None = None
    mount: Path | None = None
    as_env_var: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY.match(self.key):
            raise InvalidLayerArgument(
                "Secret.key",
                f"{self.key!r} is not a secret key; use letters, digits, '.', '_' and '-' "
                "(it names the secret, it is not the secret's value)",
            )
        if self.group is not None and (not isinstance(self.group, str) or not _KEY.match(self.group)):
            raise InvalidLayerArgument(
                "Secret.group", f"{self.group!r} is not a group name; use letters, digits, '.', '_' and '-'"
            )
        if self.mount is not None:
            mount = Path(self.mount) if isinstance(self.mount, str) else self.mount
            text = str(mount)
            # It goes into a `--mount=type=secret,...,target=PATH` flag: no separators of any kind.
            unsafe = re.search(r"[\x00-\x1f\x7f,\"']", text) or any(ch.isspace() for ch in text)
            if not isinstance(mount, Path) or not mount.is_absolute() or unsafe:
                raise InvalidLayerArgument(
                    "Secret.mount",
                    f"{self.mount!r} is not an absolute path without white space, commas, quotes or "
                    "control characters, e.g. Path('/run/secrets/token')",
                )
            object.__setattr__(self, "mount", mount)
        if self.as_env_var is not None and (not isinstance(self.as_env_var, str) or not _ENV.match(self.as_env_var)):
            raise InvalidLayerArgument(
                "Secret.as_env_var",
                f"{self.as_env_var!r} is not an environment variable name (letters, digits, '_')",
            )

    @property
    def source_env_var(self) -> str:
        """The host environment variable the value is read from at build time."""
        name = f"{self.group}_{self.key}" if self.group else self.key
        return re.sub(r"[^A-Za-z0-9_]", "_", name).upper()

    @property
    def build_id(self) -> str:
        """The BuildKit secret id of this secret (unique per group and key)."""
        return f"{self.group}.{self.key}" if self.group else self.key

    def stable_hash(self) -> str:
        """Deterministic, process-independent hash (as hex string)."""
        mount = None if self.mount is None else self.mount.as_posix()
        return sha256_hex(("Secret", self.key, self.group, mount, self.as_env_var))


SecretRequest = str | Secret | list[str | Secret] | tuple[str | Secret, ...]


def normalize_secrets(value: object) -> tuple[Secret, ...]:
    """A str, a Secret, or a list of them -> a tuple of Secrets without duplicates, in order."""
    if value is None:
        return ()
    items = [value] if isinstance(value, (str, Secret)) else value
    if not isinstance(items, (list, tuple)):
        raise InvalidLayerArgument(
            "secret_mounts", f"expected a str, a Secret or a list of them, got {type(value).__name__}"
        )
    out: list[Secret] = []
    for item in items:
        secret = Secret(key=item) if isinstance(item, str) else item
        if not isinstance(secret, Secret):
            raise InvalidLayerArgument("secret_mounts", f"expected a str or a Secret, got {type(secret).__name__}")
        if secret not in out:
            out.append(secret)
    return tuple(out)
