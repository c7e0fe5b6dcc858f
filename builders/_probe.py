"""Whether a BuildKit daemon can be reached as buildx will reach it (`probe`), and whether its
settings can work at all (`check_settings`), each failure a typed error saying what to fix.

buildx reports a daemon it cannot reach, or a TLS handshake that fails, only as "context
deadline exceeded" after 20 s; connecting first, with the same address and TLS files, turns
that into EngineUnavailableError or BuilderTLSError at once.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from flyte_images._config import BuildkitSettings
from flyte_images._errors import BuilderTLSError, ConfigError, EngineUnavailableError

PROBE_TIMEOUT = 10.0  # seconds to connect and shake hands; buildx itself waits 20 s, silently
# An HTTP/2 client preface and an empty SETTINGS frame: what a gRPC client sends first. A daemon
# that refuses our client certificate says so only once data flows (TLS 1.3 sends it late).
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")

_CLIENT_CERT_REFUSED = re.compile(
    r"UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_UNKNOWN|UNSUPPORTED_CERTIFICATE|CERTIFICATE_EXPIRED|"
    r"CERTIFICATE_REVOKED|ACCESS_DENIED|DECRYPT_ERROR",
    re.I,
)


def _source(key: str) -> str:
    return f"FLYTE_IMAGES_{key.upper()} (or {key} in the config file)"


def check_settings(settings: BuildkitSettings) -> BuildkitSettings:
    """`settings` with `~` in the TLS file names expanded (as a shell would for a flag); a
    ConfigError naming a setting that cannot work, before anything is started."""
    scheme = urlsplit(settings.addr).scheme
    if "://" not in settings.addr or not scheme:
        raise ConfigError(
            f"buildkit address {settings.addr!r} from {_source('buildkit_addr')} has no scheme; "
            "use unix:///path/to/buildkitd.sock or tcp://host:port"
        )
    if bool(settings.cert) != bool(settings.key):
        given, missing = ("buildkit_cert", "buildkit_key") if settings.cert else ("buildkit_key", "buildkit_cert")
        raise ConfigError(f"{_source(given)} is set but {_source(missing)} is not: a client certificate needs its key")
    for key in ("buildkit_ca", "buildkit_cert", "buildkit_key"):
        value = getattr(settings, key.removeprefix("buildkit_"))
        if value and not Path(value).expanduser().is_file():
            raise ConfigError(f"{_source(key)} names {value}, which is not a file")
    paths = {k: str(Path(v).expanduser()) for k in ("ca", "cert", "key") if (v := getattr(settings, k))}
    return dataclasses.replace(settings, **paths)


def probe(settings: BuildkitSettings, timeout: float = PROBE_TIMEOUT, origin: str | None = None) -> None:
    """Connect to the daemon as buildx will; raise a typed error that says what to fix.

    unix:// and tcp:// are checked (tcp:// with the TLS handshake when TLS files are set); other
    schemes buildx understands (docker-container://, kube-pod://, ssh://) are left to buildx.
    `origin`: where the address was set, when not FLYTE_IMAGES_BUILDKIT_ADDR or buildkit_addr.
    """
    url = urlsplit(settings.addr)
    where = f"buildkitd at {settings.addr} (from {origin or _source('buildkit_addr')})"
    if url.scheme == "unix":
        path = settings.addr.removeprefix("unix://")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(path)
            except FileNotFoundError:
                raise EngineUnavailableError(
                    f"{where}: there is no socket at {path}; start buildkitd (buildkitd --addr unix://{path}) "
                    "or point FLYTE_IMAGES_BUILDKIT_ADDR at a running daemon"
                ) from None
            except PermissionError:
                raise EngineUnavailableError(
                    f"{where}: permission denied on {path}; run as a member of the socket's group "
                    "(buildkitd --group) or as its owner"
                ) from None
            except OSError as exc:
                raise EngineUnavailableError(
                    f"{where} does not answer ({exc.strerror or exc}): is buildkitd running? "
                    "A socket left by a stopped daemon refuses connections"
                ) from None
        return
    if url.scheme != "tcp":
        return
    try:
        host, port = url.hostname, url.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ConfigError(f"buildkit address {settings.addr!r} needs a host and a port: tcp://host:port")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise EngineUnavailableError(
            f"cannot reach {where}: {reason}. Check the address, that buildkitd runs and listens "
            f"there (buildkitd --addr tcp://0.0.0.0:{port}), and that the port is open to this machine"
        ) from None
    with sock:
        sock.settimeout(timeout)
        if settings.ca or settings.cert:
            _handshake(sock, settings, host, where)
        else:
            _plain(sock, where)


def _plain(sock: socket.socket, where: str) -> None:
    """No TLS files: say so when the daemon turns out to want TLS. A plain gRPC server answers
    the client preface with its own SETTINGS frame; a TLS-only one closes the connection or sends
    a TLS alert record (0x15)."""
    try:
        sock.sendall(_H2_HELLO)
        first = sock.recv(1)
    except OSError:
        first = b""
    if first in (b"", b"\x15"):
        raise BuilderTLSError(
            f"{where} closed the connection without a word, as a daemon that serves TLS only does: set "
            "FLYTE_IMAGES_BUILDKIT_CA to the CA of its certificate, and FLYTE_IMAGES_BUILDKIT_CERT / "
            "FLYTE_IMAGES_BUILDKIT_KEY to a client certificate it trusts"
        )


def _handshake(sock: socket.socket, settings: BuildkitSettings, host: str, where: str) -> None:
    try:
        context = ssl.create_default_context(cafile=settings.ca)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{_source('buildkit_ca')} names {settings.ca}, which cannot be read as PEM CA certificates ({exc})"
        ) from None
    context.set_alpn_protocols(["h2"])
    if settings.cert:
        try:
            context.load_cert_chain(settings.cert, settings.key)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"the client certificate {settings.cert} and key {settings.key} cannot be used together "
                f"({exc.reason or exc}); give the key that belongs to the certificate (both PEM files)"
            ) from None
    name = settings.server_name or host
    ca = settings.ca or "the system's CAs"
    try:
        with context.wrap_socket(sock, server_hostname=name) as tls:
            tls.sendall(_H2_HELLO)
            tls.recv(1)
    except ssl.SSLCertVerificationError as exc:
        detail = exc.verify_message or exc.reason or str(exc)
        if "mismatch" in detail.lower():
            raise BuilderTLSError(
                f"{where}: its certificate is not valid for the name {name!r} ({detail}); set "
                "FLYTE_IMAGES_BUILDKIT_SERVER_NAME to a name its certificate holds"
            ) from None
        raise BuilderTLSError(
            f"{where}: its certificate is not trusted by {ca} ({detail}); set FLYTE_IMAGES_BUILDKIT_CA to "
            "the CA that signed the daemon's certificate (buildkitd --tlscert)"
        ) from None
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        if "CERTIFICATE_REQUIRED" in reason.upper():
            raise BuilderTLSError(
                f"{where} requires a client certificate: set FLYTE_IMAGES_BUILDKIT_CERT and "
                "FLYTE_IMAGES_BUILDKIT_KEY to one signed by the CA the daemon trusts (buildkitd --tlscacert)"
            ) from None
        if _CLIENT_CERT_REFUSED.search(reason):
            raise BuilderTLSError(
                f"{where} refused the client certificate {settings.cert} ({reason}); it must be signed by "
                "the CA the daemon trusts (buildkitd --tlscacert) and allow client authentication"
            ) from None
        raise BuilderTLSError(
            f"the TLS handshake with {where} failed ({reason}); if the daemon does not use TLS, unset "
            "FLYTE_IMAGES_BUILDKIT_CA, _CERT and _KEY"
        ) from None
    except OSError as exc:
        raise BuilderTLSError(
            f"{where} closed the connection during the TLS handshake ({exc.strerror or exc}); check "
            "that the client certificate is signed by the CA the daemon trusts"
        ) from None
