"""`flyte-images build` on a terminal: a live view that shows each step while it runs."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from engine_support import BUSYBOX

pytestmark = pytest.mark.engine


def test_a_build_under_a_terminal_shows_the_step_while_it_runs(engine: None, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    (tmp_path / "images.py").write_text(
        "from flyte_images import Image\n"
        f"img = Image.from_base({BUSYBOX!r}).clone(name='fi-test-pty')"
        # The markers are made when the step runs, so the step's title (shown too) holds neither.
        f".with_commands(['m={marker}; echo started-$m; sleep 3; echo done-$m'])\n"
    )
    main, child = pty.openpty()
    command = [sys.executable, "-m", "flyte_images._cli", "build", str(tmp_path / "images.py")]
    env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
    proc = subprocess.Popen(command, stdin=child, stdout=subprocess.PIPE, stderr=child, env=env)
    os.close(child)
    seen, during = b"", b""
    while proc.poll() is None:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                seen += os.read(main, 65536)
            except OSError:
                break
        if not during and f"started-{marker}".encode() in seen:
            during = seen  # what the terminal showed while the step was still running
    assert proc.stdout is not None
    uri = proc.stdout.read().decode().strip()
    proc.wait(timeout=60)
    os.close(main)
    assert proc.returncode == 0 and uri.startswith("fi-test-pty:")
    assert during, f"the step's output never appeared while it ran: {seen[-2000:]!r}"
    assert b"RUN" in during and f"done-{marker}".encode() not in during
    subprocess.run(["docker", "image", "rm", "-f", uri], capture_output=True, check=False)
