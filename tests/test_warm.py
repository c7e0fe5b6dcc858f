"""The warm server: commands run by a forked worker behave as commands run in their own process
(output, exit status, environment, working folder, signals), and only ever get faster."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flyte_images import _warm

CLI = [sys.executable, "-m", "flyte_images._cli"]

IMAGES = """\
import os
from pathlib import Path
from flyte_images import Image

Path(os.environ["PIDS"]).write_text(f"{os.getpid()} {os.getppid()}")
if os.environ.get("HOLD"):
    Path(os.environ["HOLD"]).write_text("holding")
    import time
    time.sleep(60)
app = (
    Image.from_base("registry.test/base:1").clone(name="app", registry="registry.test")
    .with_source_folder(Path("src"), dst="/app")
    .with_env_vars({"MODE": os.environ["MODE"]})
)
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project and a private server folder; the server, when one started, is stopped after."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("A = 1\n")
    (root / "images.py").write_text(IMAGES)
    runtime = Path(tempfile.mkdtemp(prefix="fiw-"))  # short: a socket's path has at most ~100 bytes
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("FLYTE_IMAGES_SERVER", "1")
    monkeypatch.setenv("FLYTE_IMAGES_SERVER_IDLE", "60")
    monkeypatch.setenv("PIDS", str(tmp_path / "pids"))
    monkeypatch.setenv("MODE", "one")
    monkeypatch.chdir(root)
    yield root
    for pid in _servers(runtime):
        os.kill(pid, signal.SIGTERM)
    shutil.rmtree(runtime, ignore_errors=True)


def _servers(runtime: Path) -> list[int]:
    found = subprocess.run(["pgrep", "-f", f"{runtime}/flyte-images-"], check=False, capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _socket(runtime: Path) -> Path:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = list(runtime.glob("flyte-images-*/*.sock"))
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no server socket appeared")


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], tuple[int, int]]:
    done = subprocess.run([*CLI, *args], check=False, capture_output=True, text=True, env=env, timeout=60)
    pids = Path(os.environ["PIDS"]).read_text().split()
    return done, (int(pids[0]), int(pids[1]))


def test_a_served_command_prints_what_its_own_process_prints(project: Path) -> None:
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    first, _pids = _run("id", "images.py:app", "--json")  # no server yet: runs itself, starts one
    socket = _socket(runtime)
    assert socket.stat().st_mode & 0o777 == 0o600 and socket.parent.stat().st_mode & 0o777 == 0o700
    served, (worker, server) = _run("id", "images.py:app", "--json")
    assert server in _servers(runtime) and worker != server  # a worker forked by the server ran it
    alone, _ = _run("id", "images.py:app", "--json", env={**os.environ, "FLYTE_IMAGES_SERVER": "0"})
    assert served.returncode == first.returncode == alone.returncode == 0
    assert served.stdout == first.stdout == alone.stdout and json.loads(served.stdout)
    assert served.stderr == alone.stderr


def test_the_worker_takes_the_commands_environment_and_folder(project: Path, tmp_path: Path) -> None:
    _run("id", "images.py:app")
    _socket(Path(os.environ["XDG_RUNTIME_DIR"]))
    results = {}
    for mode in ("one", "two"):
        env = {**os.environ, "MODE": mode}
        served, (_worker, server) = _run("id", "images.py:app", env=env)
        alone, _ = _run("id", "images.py:app", env={**env, "FLYTE_IMAGES_SERVER": "0"})
        assert server != os.getpid() and served.stdout == alone.stdout
        results[mode] = served.stdout
    assert results["one"] != results["two"]  # MODE reached the image: the worker saw each command's value
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "images.py").write_text(IMAGES)
    (elsewhere / "src").mkdir()
    (elsewhere / "src" / "a.py").write_text("A = 2\n")  # other content: another identifier
    done = subprocess.run([*CLI, "id", "images.py:app"], check=False, capture_output=True, text=True, cwd=elsewhere)
    assert done.returncode == 0 and done.stdout != results["one"]


def test_exit_status_and_errors_come_back(project: Path) -> None:
    _run("id", "images.py:app")
    _socket(Path(os.environ["XDG_RUNTIME_DIR"]))
    served = subprocess.run([*CLI, "id", "missing.py"], check=False, capture_output=True, text=True)
    alone = subprocess.run(
        [*CLI, "id", "missing.py"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "FLYTE_IMAGES_SERVER": "0"},
    )
    assert served.returncode == alone.returncode == 2
    assert served.stderr == alone.stderr and "missing.py" in served.stderr


@pytest.mark.parametrize("how", ["ctrl-c", "killed"])
def test_stopping_the_command_stops_its_worker(project: Path, tmp_path: Path, how: str) -> None:
    _run("id", "images.py:app")
    _socket(Path(os.environ["XDG_RUNTIME_DIR"]))
    hold = tmp_path / "holding"
    command = subprocess.Popen(
        [*CLI, "id", "images.py:app"],
        env={**os.environ, "HOLD": str(hold)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not hold.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = int(Path(os.environ["PIDS"]).read_text().split()[0])
    assert worker != command.pid
    command.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
    _out, err = command.communicate(timeout=20)
    if how == "ctrl-c":
        assert command.returncode == 130 and "interrupted" in err
    deadline = time.monotonic() + 20
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone between the two looks
        return False
    return not status.split(") ")[-1].startswith("Z")


def test_an_idle_server_ends_and_removes_its_socket(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_SERVER_IDLE", "1")
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    _run("id", "images.py:app")
    socket = _socket(runtime)
    deadline = time.monotonic() + 20
    while (socket.exists() or _servers(runtime)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not socket.exists() and not _servers(runtime)


def test_when_the_server_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYTE_IMAGES_SERVER")
    monkeypatch.setenv("CI", "true")
    assert not _warm.enabled()  # CI runs each command cold unless asked
    monkeypatch.setenv("FLYTE_IMAGES_SERVER", "1")
    assert _warm.enabled()
    monkeypatch.delenv("CI")
    monkeypatch.setenv("FLYTE_IMAGES_SERVER", "0")
    assert not _warm.enabled()
    monkeypatch.delenv("FLYTE_IMAGES_SERVER")
    assert _warm.enabled()
    shared = Path(tempfile.mkdtemp(prefix="fiw-"))
    try:
        (shared / f"flyte-images-{os.getuid()}").mkdir()
        (shared / f"flyte-images-{os.getuid()}").chmod(0o755)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
        assert _warm.folder() is None  # a folder others can read is never used
        (shared / f"flyte-images-{os.getuid()}").chmod(0o700)
        assert _warm.folder() == str(shared / f"flyte-images-{os.getuid()}")
    finally:
        shutil.rmtree(shared)


def test_a_server_serves_only_its_own_python_and_path(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _warm.fingerprint()
    assert _warm.fingerprint() == before
    monkeypatch.setattr(sys, "path", [*sys.path, "/elsewhere"])
    assert _warm.fingerprint() != before


def test_a_command_imports_next_to_nothing_before_it_is_handed_over() -> None:
    """Every command pays for what its process imports before the server takes it: the command
    line and the client only (typing alone would add ~5 ms to every command)."""
    probe = (
        "import sys; before = set(sys.modules)\n"
        "from flyte_images import _cli\n"
        "from flyte_images import _warm\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert json.loads(done.stdout.replace("'", '"')) == [
        "__future__",
        "flyte_images",
        "flyte_images._cli",
        "flyte_images._version",
        "flyte_images._warm",
    ]


def test_commands_are_taken_by_a_spare_worker_forked_ahead(project: Path) -> None:
    """While nothing runs, the server keeps one worker forked and waiting on the socket; each
    command is taken by such a worker, and another is forked once the command is done."""
    runtime = Path(os.environ["XDG_RUNTIME_DIR"])
    _run("id", "images.py:app")  # starts the server
    _socket(runtime)

    def spare() -> int | None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = _servers(runtime)
            children = [p for p in found if int(Path(f"/proc/{p}/stat").read_text().split(") ")[1].split()[1]) in found]
            if children:
                return children[0]
            time.sleep(0.05)
        return None

    first = spare()
    assert first is not None
    done, (worker, parent) = _run("id", "images.py:app")
    assert done.returncode == 0 and worker == first and parent in _servers(runtime)
    second = spare()
    assert second is not None and second != first
    done, (worker, _parent) = _run("id", "images.py:app")
    assert done.returncode == 0 and worker == second
