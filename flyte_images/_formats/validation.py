"""Checks of user arguments that can never be right, done once at the call: each raises
`InvalidLayerArgument` naming the parameter, the bad value and the fix, or returns the normalised
value. Nothing here touches the filesystem or the network (a missing file fails the build).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from .._errors import InvalidArgumentType, InvalidLayerArgument

Architecture = Literal["linux/amd64", "linux/arm64"]

# Platforms BuildKit builds for: `Architecture` names two; the others are targets of Docker's
# official Python images, accepted too.
KNOWN_PLATFORMS: tuple[str, ...] = (
    "linux/amd64",
    "linux/arm64",
    "linux/arm/v7",
    "linux/arm/v6",
    "linux/386",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINE_TAB = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_APT_NAME = re.compile(r"^[a-z0-9][a-z0-9+.\-]*(:[a-z0-9\-]+)?([=/][A-Za-z0-9.+~:\-]+)?\Z")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def _show(value: object) -> str:
    """A value as messages show it: quoted, shortened, and a URL's credentials masked (any
    text may hold one: an index URL, a requirement `pkg @ https://user:token@host/...`)."""
    if isinstance(value, str) and "://" in value and "@" in value:
        value = masked_url(value)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def wrong_type(parameter: str, expected: str, value: object) -> InvalidArgumentType:
    """The TypeError for a value of the wrong type, with the fix for the usual mistake (a list
    where the items are passed one by one, as the Flyte SDK's layers also refuse it)."""
    hint = ""
    if isinstance(value, (list, tuple)):
        hint = "; pass the items as separate arguments, e.g. 'vim', 'git' instead of ['vim', 'git']"
    return InvalidArgumentType(parameter, f"expected {expected}, got {type(value).__name__} {_show(value)}{hint}")


def no_control(parameter: str, value: object, *, allow_newline: bool = False) -> str:
    """A string without control characters (newlines only where a value may span lines)."""
    if not isinstance(value, str):
        raise wrong_type(parameter, "a string", value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidLayerArgument(
            parameter, f"{_show(value)} is not valid Unicode text (it holds a lone surrogate)"
        ) from None
    pattern = _CONTROL_BUT_NEWLINE_TAB if allow_newline else _CONTROL
    found = pattern.search(value)
    if found:
        raise InvalidLayerArgument(
            parameter,
            f"{_show(value)} contains the control character {found.group()!r}; remove it "
            "(control characters such as newline, tab or NUL cannot be part of this value)",
        )
    return value


def image_reference(parameter: str, value: object) -> str:
    """An image reference that can stand alone after `FROM`: one word of printable characters
    (no white space of any kind, Unicode line separators included) and no trailing backslash,
    which would join the next instruction."""
    text = nonempty(parameter, value).strip()
    bad = next((ch for ch in text if ch.isspace() or not ch.isprintable()), None)
    if bad is not None or text.endswith("\\"):
        problem = f"contains {bad!r}" if bad is not None else "ends with a backslash"
        raise InvalidLayerArgument(
            parameter, f"{_show(value)} {problem}; an image reference is one word like python:3.12-slim"
        )
    return text


def nonempty(parameter: str, value: object, *, allow_newline: bool = False) -> str:
    text = no_control(parameter, value, allow_newline=allow_newline)
    if not text.strip():
        raise InvalidLayerArgument(parameter, f"must not be empty or blank, got {_show(value)}")
    return text


def strings(parameter: str, values: object) -> tuple[str, ...]:
    """A str or an iterable of str, as a tuple (lists are accepted where tuples are stored)."""
    if values is None:
        return ()
    if isinstance(values, str):
        return (values,)
    if isinstance(values, Iterable):
        items = tuple(values)
        for item in items:
            if not isinstance(item, str):
                raise wrong_type(parameter, "strings", item)
        return items
    raise wrong_type(parameter, "a string or a list of strings", values)


def apt_package(value: object) -> str:
    name = nonempty("packages", value).strip()
    if not _APT_NAME.match(name):
        raise InvalidLayerArgument(
            "packages",
            f"{_show(value)} is not a Debian package name; use names like 'git', 'libpq-dev', "
            "'curl=7.88.1-10+deb12u5' or 'gcc:amd64', one package per argument",
        )
    return name


def pip_requirement(value: object) -> str:
    text = nonempty("packages", value).strip()
    if text.startswith("-"):
        raise InvalidLayerArgument(
            "packages",
            f"{_show(value)} is an installer option, not a package; pass options through extra_args",
        )
    return text


def env_name(value: object) -> str:
    name = no_control("env_vars", value)
    if not _ENV_NAME.match(name):
        raise InvalidLayerArgument(
            "env_vars",
            f"{_show(value)} is not a valid environment variable name; use letters, digits and "
            "underscores, not starting with a digit (no '=', spaces or dashes)",
        )
    return name


def masked_url(text: str) -> str:
    """A URL as messages show it: everything between the scheme and the last `@` (the user and
    password, and whatever a password with an unescaped `/`, `?` or `#` spilled into) becomes
    `***`, so no part of a credential is ever shown."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return f"{scheme}{sep}{rest}"


def url(parameter: str, value: object) -> str:
    """An http(s) or file URL that parses completely (host and port), e.g. an index URL. Messages
    show it masked (`masked_url`): an index URL may carry a user and password."""
    shown = _show(value)
    text = nonempty(parameter, value).strip()
    if any(ch.isspace() for ch in text):
        raise InvalidLayerArgument(parameter, f"{shown} contains white space; a URL cannot")
    unparsable = InvalidLayerArgument(
        parameter,
        f"{shown} is not a URL that can be parsed as scheme://[user:password@]host[:port]/path; a user or "
        "password holding '/', '?', '#' or '@' must be percent-encoded "
        "(e.g. '/' as %2F: urllib.parse.quote(token, safe=''))",
    )
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - the port is parsed on access; a bad one raises here, not in a build
    except ValueError:
        # urllib's own message quotes the bad part, which is a piece of the password when it
        # holds an unescaped '/' (http://user:abc/def@host): never repeat it.
        raise unparsable from None
    if parts.scheme in ("http", "https") and "@" not in parts.netloc and "@" in text.partition(parts.netloc)[2]:
        # `http://user:12/ab@host` parses as the host `user` with port 12: the credentials would
        # be taken for a host and a path, and written into the Dockerfile as plain text.
        raise unparsable
    if parts.scheme not in ("http", "https", "file") or not (parts.netloc or parts.scheme == "file"):
        raise InvalidLayerArgument(parameter, f"{shown} is not an http(s) or file URL, e.g. https://pypi.org/simple")
    return text


def urls(parameter: str, values: object) -> tuple[str, ...]:
    return tuple(url(parameter, v) for v in strings(parameter, values))


def platforms(value: object) -> tuple[str, ...]:
    """One platform or several, as a sorted tuple without duplicates (a set, canonically)."""
    items = strings("platform", value)
    if not items:
        raise InvalidLayerArgument("platform", "at least one platform is needed, e.g. 'linux/amd64'")
    for item in items:
        if item not in KNOWN_PLATFORMS:
            raise InvalidLayerArgument(
                "platform", f"unknown platform {_show(item)}; known: {', '.join(KNOWN_PLATFORMS)}"
            )
    return tuple(sorted(set(items)))


def python_version(value: object) -> tuple[int, int]:
    """(3, 12), [3, 12] or "3.12" -> (3, 12); anything else is refused with the accepted forms."""
    parsed: tuple[int, int] | None = None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", value)
        if match:
            parsed = (int(match.group(1)), int(match.group(2)))
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        major, minor = value
        if isinstance(major, int) and isinstance(minor, int) and not isinstance(major, bool):
            parsed = (major, minor)
    if parsed is None or parsed[0] != 3 or not 8 <= parsed[1] <= 99:
        raise InvalidLayerArgument(
            "python_version",
            f"{_show(value)} is not a Python version this can build; pass (3, 12) or '3.12' (3.8 or newer)",
        )
    return parsed


def host_python_version() -> tuple[int, int]:
    return (sys.version_info.major, sys.version_info.minor)


# The distribution reference grammar (github.com/distribution/reference, regexp.go), exactly:
#   name := [domain '/'] path-component ['/' path-component]*   (at most 255 characters)
#   domain := (domain-name | '[' ipv6 ']') [':' port]
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_REPOSITORY = re.compile(rf"^{_REMOTE_NAME}$")
# A registry is what goes before the repository name: a domain with an optional namespace
# path, or a namespace path alone (`other_registry/myclone` is a valid name on Docker Hub).
_REGISTRY = re.compile(rf"^(?:{_DOMAIN}(?:/{_REMOTE_NAME})?|{_REMOTE_NAME})$")
NAME_TOTAL_LENGTH_MAX = 255


def repository_name(parameter: str, value: object) -> str:
    """An image repository name as Docker accepts it: lowercase path components."""
    text = nonempty(parameter, value).strip()
    if not _REPOSITORY.match(text) or len(text) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidLayerArgument(
            parameter,
            f"{_show(value)} is not an image repository name; use lowercase letters, digits and "
            f"'.', '_', '-' separated by '/', e.g. 'ml/trainer' (at most {NAME_TOTAL_LENGTH_MAX} characters)",
        )
    return text


def registry(parameter: str, value: object) -> str:
    """A registry host[:port], optionally with a path (a namespace), e.g. ghcr.io/acme."""
    text = nonempty(parameter, value).strip().rstrip("/")
    if "://" in text:
        raise InvalidLayerArgument(parameter, f"{_show(value)}: give the registry without a scheme, e.g. ghcr.io/acme")
    if not _REGISTRY.match(text) or len(text) >= NAME_TOTAL_LENGTH_MAX:
        raise InvalidLayerArgument(
            parameter,
            f"{_show(value)} is not a registry like ghcr.io/acme, 127.0.0.1:5000 or other_registry "
            "(a host[:port] and/or lowercase path components, as image names allow)",
        )
    return text


def local_path(parameter: str, value: object) -> Path:
    """A path on this machine, absolute and normalised (`Path("..")` is the parent folder by its
    real name); symlinks are not resolved."""
    if isinstance(value, Path):
        path = value
    elif isinstance(value, str):
        path = Path(nonempty(parameter, value))
    else:
        raise wrong_type(parameter, "a path (str or pathlib.Path)", value)
    no_control(parameter, str(path))
    return Path(os.path.normpath(path.absolute()))
