"""Credentials inside index URLs reach the build as a secret, never as Dockerfile text.

`with_pip_packages(..., index_url="https://user:token@host/simple")` is common; the token must
not land in the image history, the build log, `flyte-images dockerfile` output, explain's
record or the tag. The engine test serves a private index with basic auth to a real build.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import subprocess
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import flyte_images
from flyte_images import Image
from flyte_images._plan.explain import breakdown
from flyte_images._plan.plan import plan
from flyte_images.testing import FakeBuilder

TOKEN = "hunter2-" + uuid.uuid4().hex[:6]
DEBIAN = Image.from_debian_base(python_version=(3, 11), install_flyte=False, name="fi-index-creds")


def _with_index(url: str) -> Image:
    return DEBIAN.with_pip_packages("fi-probe", index_url=url, extra_index_urls=[url.replace("simple", "extra")])


def test_credentials_are_not_in_the_dockerfile_explain_or_tag() -> None:
    image = _with_index(f"https://user:{TOKEN}@pypi.example.com/simple")
    made = plan(image)
    assert TOKEN not in made.dockerfile
    assert [url for _id, url in made.url_secrets] == [
        f"https://user:{TOKEN}@pypi.example.com/simple",
        f"https://user:{TOKEN}@pypi.example.com/extra",
    ]
    assert '--index-url \\"$(cat /run/secrets/flyte-images-index-0)\\"' in made.dockerfile
    assert TOKEN not in breakdown(made).to_json()
    assert made.identifier == plan(_with_index("https://pypi.example.com/simple")).identifier


def test_a_secret_reference_in_the_url_is_left_to_the_shell() -> None:
    made = plan(_with_index("https://user:$PIP_TOKEN@pypi.example.com/simple"))
    assert not made.url_secrets and "$PIP_TOKEN@pypi.example.com" in made.dockerfile


def test_the_build_gets_the_url_as_a_file_secret_that_is_removed_afterwards(tmp_path: Path) -> None:
    fake = FakeBuilder()
    flyte_images.build(_with_index(f"https://user:{TOKEN}@pypi.example.com/simple"), builder=fake, quiet=True)
    (request,) = fake.requests
    files = [s.file for s in request.secrets if s.id.startswith("flyte-images-index-")]
    assert len(files) == 2 and all(f is not None and not f.exists() for f in files)
    assert TOKEN in request.redact
    assert TOKEN not in request.dockerfile.read_text()


# ----- on the real engine ----------------------------------------------------------------------


def _wheel(version: str) -> tuple[str, bytes]:
    """A tiny pure-Python wheel `fi_probe` whose module prints a marker."""
    name = f"fi_probe-{version}-py3-none-any.whl"  # a new version per run: uv's cache mount never has it
    files = {
        "fi_probe/__init__.py": b"MARK = 'probe-ok'\n",
        f"fi_probe-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: fi-probe\nVersion: {version}\n".encode()
        ),
        f"fi_probe-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"fi_probe-{version}.dist-info/RECORD,,")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
        archive.writestr(f"fi_probe-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return name, buffer.getvalue()


def _bridge_address() -> str:
    """The host's address on Docker's default bridge, where build containers can reach it."""
    command = ["ip", "-4", "-o", "addr", "show", "docker0"]
    out = subprocess.run(command, check=False, capture_output=True, text=True).stdout
    if "inet " not in out:
        pytest.fail(f"no IPv4 address on docker0 ({out.strip()!r}); the engine's bridge network is needed")
    return out.split("inet ", 1)[1].split("/", 1)[0]


@pytest.fixture
def private_index() -> Iterator[tuple[str, list[str], str]]:
    """A PEP 503 index that answers only with basic auth user:TOKEN, on the docker bridge."""
    version = f"1.0.{uuid.uuid4().int % 10**9}"
    wheel_name, wheel = _wheel(version)
    expected = "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.head = True
            self.do_GET()

        def do_GET(self) -> None:
            seen.append(self.path)
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.end_headers()
                return
            if self.path.rstrip("/") in ("/simple/fi-probe", "/extra/fi-probe"):
                body = f'<a href="/files/{wheel_name}">{wheel_name}</a>'.encode()
                self._send(body, "text/html")
            elif self.path == f"/files/{wheel_name}":
                self._send(wheel, "application/octet-stream")
            else:
                self.send_response(404)
                self.end_headers()

        def _send(self, body: bytes, kind: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not getattr(self, "head", False):
                self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gateway = _bridge_address()
    try:
        yield f"http://user:{TOKEN}@{gateway}:{server.server_address[1]}/simple", seen, version
    finally:
        server.shutdown()


@pytest.mark.engine
def test_a_real_build_installs_from_a_private_index_and_the_token_is_nowhere(
    engine: None, private_index: tuple[str, list[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen, version = private_index
    # The version pins the RUN line to this run: the secret is not part of BuildKit's cache key.
    image = DEBIAN.clone(name=f"fi-index-{uuid.uuid4().hex[:8]}").with_pip_packages(
        f"fi-probe=={version}", index_url=url
    )
    from flyte_images._build import progress as _progress

    out = io.StringIO()
    real_sink = _progress.progress_sink
    monkeypatch.setattr(
        _progress, "progress_sink", lambda quiet=False, stream=None, title="": real_sink(False, out, title)
    )
    result = flyte_images.build(image, push=False)
    lines = out.getvalue().splitlines()
    assert any("/files/fi_probe" in path for path in seen), (seen, lines[-30:], result)
    run = subprocess.run(
        ["docker", "run", "--rm", result.uri, "python", "-c", "import fi_probe; print(fi_probe.MARK)"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert run.stdout.strip() == "probe-ok"
    history = subprocess.run(
        ["docker", "history", "--no-trunc", result.uri], check=True, capture_output=True, text=True
    ).stdout
    saved = subprocess.run(["docker", "save", result.uri], check=True, capture_output=True).stdout
    try:
        assert lines and TOKEN not in "\n".join(lines)
        assert TOKEN not in history and TOKEN.encode() not in saved
        assert base64.b64encode(TOKEN.encode()) not in saved
    finally:
        subprocess.run(["docker", "image", "rm", "-f", result.uri], capture_output=True, check=False)
