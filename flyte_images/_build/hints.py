"""What a failed build most likely needs, recognised from the failing step's output.

A hint is added to the error's message (`hint: ...`), so the library's exception, the CLI's
failure block and CI logs all carry it. Only causes we recognise reliably get one.
"""

from __future__ import annotations

import os
import re

from .._errors import BuildError

_CERT = re.compile(
    r"invalid peer certificate|UnknownIssuer|CERTIFICATE_VERIFY_FAILED|certificate verify failed|"
    r"self[- ]signed certificate|unable to get local issuer certificate|SSL certificate problem",
    re.IGNORECASE,
)
_APT_MISSING = re.compile(r"Unable to locate package (\S+)|Package '?(\S+?)'? has no installation candidate")
_PY_MISSING = re.compile(
    r"Because (\S+) was not found in the package registry|No matching distribution found for (\S+)|"
    r"(\S+) was not found in the package registry"
)
_DISK = re.compile(r"no space left on device", re.IGNORECASE)


def hint_for(text: str) -> str | None:
    """The hint for a failure whose output is `text`, or None."""
    if _CERT.search(text):
        host = [f"{v}={os.environ[v]}" for v in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE") if os.environ.get(v)]
        where = f" (this machine sets {', '.join(host)}: pass that file)" if host else ""
        return (
            "downloads inside the build do not trust this network's TLS certificates (a TLS-inspecting "
            "proxy?): pass the CA bundle with --ca-bundle FILE, build(..., ca_bundle=FILE) or "
            f"FLYTE_IMAGES_CA_BUNDLE=FILE{where}; Debian's is /etc/ssl/certs/ca-certificates.crt"
        )
    apt = _APT_MISSING.search(text)
    if apt:
        return f"apt has no package {apt.group(1) or apt.group(2)!r} in the base image's sources; check the name"
    py = _PY_MISSING.search(text)
    if py:
        name = next(g for g in py.groups() if g)
        return f"the package index has no {name!r} (or no version that fits); check the name, version and index_url"
    if _DISK.search(text):
        return "the disk is full: free space (docker builder prune, docker image prune) and run again"
    return None


def add_hint(error: BuildError) -> None:
    """Append the hint for `error` to its message, once. Only our own line counts as already
    there: the failing tool may print a `hint:` of its own (uv does), which is kept, and ours
    still follows it."""
    text = str(error)
    hint = hint_for(text)
    if hint and f"\nhint: {hint}" not in text:
        error.args = (f"{text}\nhint: {hint}", *error.args[1:])
