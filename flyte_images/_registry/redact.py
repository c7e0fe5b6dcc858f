"""Keeping credentials out of the registry client's reasons, logs and errors, in two layers:
the secrets it has loaded (passwords, tokens) are masked wherever they appear, even echoed back
by a server; those it never loaded (`scheme://user:password@host`, a signed query string) are
removed by shape.
"""

from __future__ import annotations

import re

MASK = "***"
# Patterns, compiled (and kept by `re`) when first used: only a failure's message is redacted,
# so a command that succeeds never pays for compiling them.
_USERINFO = r"([a-z][a-z0-9+.-]*://)[^\s/?#]*@"
_QUERY = r"([a-z][a-z0-9+.-]*://[^\s?#]*)\?[^\s'\"]*"
_AUTH_VALUE = r"\b(basic|bearer)\s+[A-Za-z0-9._~+/=-]+"
# A reference has no scheme and no userinfo; what stands before an `@` that does not start a
# digest (`user:token@host/...`) or after `scheme://` up to the last `@` is taken as a secret.
_REF_USERINFO = r"^(?:[a-z][a-z0-9+.-]*://\S*@|[^@\s]*@(?![a-z0-9]+:[0-9a-f]))"


def one_line(text: str) -> str:
    """Every run of whitespace (newlines included) as one space: a reason is one line."""
    return " ".join(text.split())


def by_shape(text: str) -> str:
    """`text` without URL userinfo, URL query strings and Authorization values."""
    text = re.sub(_USERINFO, rf"\1{MASK}@", text, flags=re.IGNORECASE)
    text = re.sub(_QUERY, rf"\1?{MASK}", text, flags=re.IGNORECASE)
    return re.sub(_AUTH_VALUE, rf"\1 {MASK}", text, flags=re.IGNORECASE)


def reference(text: str) -> str:
    """A reference as it may be shown: anything that looks like credentials in it masked."""
    return one_line(by_shape(re.sub(_REF_USERINFO, f"{MASK}@", text, flags=re.IGNORECASE)))


class Redactor:
    """Masks the secrets it has been told about, then anything shaped like one."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, *secrets: str) -> None:
        self._secrets.update(s for s in secrets if s)

    def __call__(self, text: str) -> str:
        # Longest first, so a secret that contains another is masked whole; any case, since an
        # echoed header value may come back lowercased.
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = re.sub(re.escape(secret), MASK, text, flags=re.IGNORECASE)
        return one_line(by_shape(text))
