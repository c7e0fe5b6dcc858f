"""What every layer kind is: a frozen value of normalised arguments that knows the files it reads
(`inputs`, each read once through the plan's `Sources`: hashed, and staged under `_fi/<position>/`
when building), its part of the identifier (`identity`), its Dockerfile lines (`render`) and how
`explain` shows it (`describe`). `identity` and `render` see only what `inputs` returned, so
they never see other bytes than the ones that are sent.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from ..._files.entries import DIR, Tree
from ..._files.sources import Sources, Staged
from ..._formats.encoding import Encodable
from ..._formats.validation import masked_url
from ..secret import Secret

if TYPE_CHECKING:
    from ..._formats.dockerfile import Instructions

Files = dict[str, tuple[int, str]]
# The poetry the renderer installs (see `python`); kept here because every identifier includes
# it (see `identity`), and reading it must not load the Python layer kinds.
POETRY_VERSION = "2.2.1"


@dataclass(frozen=True)
class Inputs:
    """What a layer read: single files by label, copied folders, and parsed content."""

    files: tuple[tuple[str, Staged], ...] = ()  # (label, staged file)
    trees: tuple[tuple[str, str, Tree], ...] = ()  # (label prefix, staged dest, tree)
    data: Any = None

    def manifest(self) -> list[Staged]:
        """Every staged path these inputs put into the context."""
        out = [staged for _label, staged in self.files if staged.dest]  # dest "" is read only
        for _label, dest, tree in self.trees:
            out += [Staged(f"{dest}/{e.path}" if dest else e.path, e) for e in tree.entries]
        return out

    def explain_files(self) -> Files:
        """Every file by the path the image knows it under: mode and SHA-256."""
        files = {label: (s.entry.mode, s.entry.digest) for label, s in self.files}
        for label, _dest, tree in self.trees:
            files.update({f"{label}{e.path}": (e.mode, e.digest) for e in tree.entries if e.kind != DIR})
        return files


def staged_file(sources: Sources, path: Path, dest: str, what: str, label: str = "") -> tuple[str, Staged]:
    """One file read through `sources` (staged at `dest`), labelled `label` or its name there."""
    return label or dest.rpartition("/")[2], Staged(dest, sources.file(path, dest, what))


def secrets_identity(secrets: tuple[Secret, ...]) -> Encodable:
    return tuple((s.key, s.group, None if s.mount is None else s.mount.as_posix(), s.as_env_var) for s in secrets)


def index_identity(url: str | None) -> str | None:
    """An index URL without user:password: rotating a token must not change the image tag. Text
    that does not parse (a URL-like field `describe` shows; index URLs were checked when made)
    is shown masked: urllib's error would quote a piece of the credential."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return masked_url(url)
    host = parts.hostname or ""
    if port is not None:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class Layer(ABC):
    """Base of every layer kind."""

    KIND: ClassVar[str] = "layer"

    def preflight(self) -> None:  # noqa: B027 - most layers check nothing: not abstract
        """Checks with tools on this machine before a build stages anything (none by default)."""

    def inputs(self, sources: Sources, index: int) -> Inputs:
        """Read the files this layer uses (none by default)."""
        del sources, index
        return Inputs()

    @abstractmethod
    def identity(self, inputs: Inputs) -> Encodable:
        """What this layer adds to the image identifier."""

    @abstractmethod
    def render(self, out: Instructions, inputs: Inputs, index: int) -> None:
        """Append this layer's instructions."""

    def validate(self) -> None:
        """Raise a SourceError if a file or folder this layer needs is missing."""
        self.inputs(Sources(), 0)

    def describe(self) -> str:
        """The layer's arguments, with paths shown by name (files are listed separately)."""
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value in (None, (), False, "") and f.name != "workdir":
                continue
            if isinstance(value, Path):
                value = value.name
            elif isinstance(value, str) and "://" in value:
                value = index_identity(value)  # never show user:password
            elif isinstance(value, tuple) and value and isinstance(value[0], str) and "://" in value[0]:
                value = tuple(index_identity(v) for v in value)
            elif isinstance(value, tuple) and value and isinstance(value[0], tuple):
                value = " ".join(f"{k}={v}" for k, v in value)
            elif isinstance(value, tuple):
                value = " ".join(str(getattr(v, "key", v)) for v in value)
            parts.append(f"{f.name}={value}")
        return " ".join(parts)
