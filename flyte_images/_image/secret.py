"""`Secret`: a reference to a secret value, never the value itself."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .._errors import InvalidLayerArgument
from .._formats.encoding import sha256_hex

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
# A key the Flyte SDK also takes when the secret says where it goes (`as_env_var` or `mount`),
# such as a path: path segments of the same characters. It becomes the BuildKit secret id and
# part of the default target path, so nothing that could end a mount flag or leave the folder.
_PATH_KEY = re.compile(r"^/?[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*\Z")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def key_problem(key: object, *, placed: bool) -> str | None:
    """Why `key` cannot name a secret, or None. `placed`: the secret has `as_env_var` or `mount`,
    so its key need not name a variable (the Flyte SDK then takes any key)."""
    if isinstance(key, str) and _KEY.match(key):
        return None
    if placed and isinstance(key, str) and _PATH_KEY.match(key) and not {".", ".."} & set(key.split("/")):
        return None
    example = re.sub(r"[^A-Za-z0-9_.\-]+", "-", str(key).rpartition("/")[2]).strip("-._") or "token"
    variable = re.sub(r"[^A-Za-z0-9_]", "_", example).upper()
    where = (
        "segments of letters, digits, '.', '_' and '-' separated by '/'"
        if placed
        else "letters, digits, '.', '_' and '-', or give as_env_var or mount as well"
    )
    return (
        f"{key!r} is not a secret key; use {where} (it names the secret, it is not its value or its "
        f"file): e.g. {example!r}, whose value a build reads from the environment variable {variable}, "
        f"or from the file named by {variable}_FILE"
    )


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
        placed = self.mount is not None or self.as_env_var is not None
        problem = key_problem(self.key, placed=placed)
        if problem:
            raise InvalidLayerArgument("Secret.key", problem)
        if self.group is not None and key_problem(self.group, placed=placed):
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


@dataclass(frozen=True)
class UnnamedSecret(Secret):
    """A string in `secret_mounts` that is not a secret key (a path such as "/tmp/secret1"). As in
    the Flyte SDK, the image can be described and identified, and a build (or a dry run) raises
    `problem()`; it is never mounted."""

    def __post_init__(self) -> None:
        pass  # refused when built, by `unusable_secrets`

    @property
    def build_id(self) -> str:
        # The string may hold anything printable; what `flyte-images dockerfile` shows for it
        # must still be one well-formed mount flag.
        return "unnamed-" + sha256_hex(("UnnamedSecret", self.key))[:16]

    def problem(self) -> InvalidLayerArgument:
        return InvalidLayerArgument("secret_mounts", key_problem(self.key, placed=False) or repr(self.key))


def unusable_secrets(secrets: tuple[Secret, ...]) -> None:
    """Raise for the first secret a build could not mount (see `UnnamedSecret`)."""
    for secret in secrets:
        if isinstance(secret, UnnamedSecret):
            raise secret.problem()


def _from_string(key: str) -> Secret:
    if key_problem(key, placed=False) is None:
        return Secret(key=key)
    if not key.strip() or any(not ch.isprintable() for ch in key):
        raise InvalidLayerArgument("secret_mounts", key_problem(key, placed=False) or repr(key))
    return UnnamedSecret(key=key)


def normalize_secrets(value: object) -> tuple[Secret, ...]:
    """A str, a Secret, or a list of them -> a tuple of Secrets without duplicates, in order.
    A string that is not a secret key is kept as an `UnnamedSecret`, refused when built."""
    if value is None:
        return ()
    items = [value] if isinstance(value, (str, Secret)) else value
    if not isinstance(items, (list, tuple)):
        raise InvalidLayerArgument(
            "secret_mounts", f"expected a str, a Secret or a list of them, got {type(value).__name__}"
        )
    out: list[Secret] = []
    for item in items:
        secret = _from_string(item) if isinstance(item, str) else item
        if not isinstance(secret, Secret):
            raise InvalidLayerArgument("secret_mounts", f"expected a str or a Secret, got {type(secret).__name__}")
        if secret not in out:
            out.append(secret)
    return tuple(out)
