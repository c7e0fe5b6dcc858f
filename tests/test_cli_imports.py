"""What a registry command loads: httpx, but not httpx's own command line (click, rich, pygments)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_a_registry_command_does_not_load_httpx_command_line() -> None:
    pytest.importorskip("click")  # httpx loads its command line only when click is installed
    script = (
        "import sys\n"
        "from flyte_images._cli import main\n"
        "code = main(['exists', '127.0.0.1:9/none/app:tag', '--json'])\n"
        "print(code, 'httpx' in sys.modules, sorted(m for m in ('click', 'pygments') if m in sys.modules))\n"
    )
    env = {"FLYTE_IMAGES_REGISTRY_TIMEOUT": "1", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    last = done.stdout.strip().splitlines()[-1]
    assert last.split(" ", 2)[1:] == ["True", "[]"], done.stdout + done.stderr
