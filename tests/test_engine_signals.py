"""Ctrl-C and SIGTERM stop a build: the command ends within two seconds (exit 130) and leaves
nothing of its own running: no buildx, no build step in BuildKit, no upload to the registry."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_support import BUSYBOX

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]
# The bound the command has to end in once signalled: enough for buildx to cancel its session.
STOP_WITHIN_S = 2.0


def _start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "flyte_images._cli", *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _processes_naming(marker: str) -> list[str]:
    """Command lines of the processes on this machine that mention `marker` (not this test's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker in line:
                found.append(f"{entry.name}: {line}")
    return found


def _wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _stop_and_time(process: subprocess.Popen[str], signum: int) -> float:
    started = time.monotonic()
    process.send_signal(signum)
    try:
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return time.monotonic() - started


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_stops_an_engine_build(tmp_path: Path, signum: int) -> None:
    marker = f"fi-sig-{uuid.uuid4().hex[:12]}"
    (tmp_path / "images.py").write_text(
        "from flyte_images import Image\n"
        f"app = Image.from_base({BUSYBOX!r}).clone(name={marker!r})"
        f".with_commands(['sleep 120; echo {marker}'])\n"
    )
    process = _start("build", "images.py", "--force", cwd=tmp_path)
    # The step runs when BuildKit's container runs `sh -c "sleep 120; echo <marker>"`.
    _wait_for(lambda: any("sleep 120" in p for p in _processes_naming(marker)), 120, "the RUN step to start")
    took = _stop_and_time(process, signum)
    _out, err = process.communicate()
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert took < STOP_WITHIN_S, f"the command took {took:.1f} s to stop"
    # buildx (named by the tag) and the step's container process are gone: the build was cancelled.
    _wait_for(lambda: not _processes_naming(marker), 10, f"nothing running: {_processes_naming(marker)}")


class StallingProxy:
    """A TCP relay in front of the registry that, once `stall` is set, holds every request that
    starts or continues a blob upload (its bytes are read, never passed on) and records which of
    its client connections are still open."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.stall = threading.Event()
        self.stalled = threading.Event()
        self.open_clients: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _addr = self._listener.accept()
                with self._lock:
                    self.open_clients.add(client)
                threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        held = False
        try:
            while True:
                readable, _w, _x = select.select([client, server], [], [], 0.5)
                for sock in readable:
                    data = sock.recv(1 << 16)
                    if not data:
                        return
                    if sock is client:
                        if self.stall.is_set() and b"/blobs/uploads" in data:
                            held = True
                            self.stalled.set()
                        if not held:
                            server.sendall(data)
                    else:
                        client.sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self.open_clients.discard(client)
            client.close()
            server.close()

    def close(self) -> None:
        self._listener.close()


@contextlib.contextmanager
def stalling_proxy(registry: str) -> Iterator[StallingProxy]:
    host, port = registry.rsplit(":", 1)
    proxy = StallingProxy((host, int(port)))
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_stops_an_append(tmp_path: Path, local_registry: str, signum: int) -> None:
    with stalling_proxy(local_registry) as proxy:
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.txt").write_text("first\n")
        marker = f"fi-sig-append-{uuid.uuid4().hex[:12]}"
        (tmp_path / "images.py").write_text(
            "from pathlib import Path\nfrom flyte_images import Image\n"
            f"app = (Image.from_base({BUSYBOX!r}).clone(name={marker!r}, registry={proxy.host!r})"
            ".with_commands(['echo engine part > /part'])"
            f".with_source_folder(Path({str(src)!r}), dst='/app'))\n"
        )
        first = _start("build", "images.py", "--quiet", cwd=tmp_path)
        _out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err

        (src / "a.txt").write_text(f"edited {uuid.uuid4().hex}\n")  # only the file part changes
        proxy.stall.set()
        process = _start("build", "images.py", cwd=tmp_path)
        _wait_for(proxy.stalled.is_set, 120, "an upload to the registry")
        took = _stop_and_time(process, signum)
        _out, err = process.communicate()
        assert process.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        assert took < STOP_WITHIN_S, f"the command took {took:.1f} s to stop"
        assert "appended" not in err  # the stalled upload did not end as a pushed image
        _wait_for(lambda: not proxy.open_clients, 5, "every connection to the registry to close")
        assert not _processes_naming(marker)
