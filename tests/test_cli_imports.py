"""What a command loads: a registry command httpx, but not httpx's own command line (click, rich,
pygments); an append build of an edited folder not the layer reader, and no command pydantic.
And what the program leaves to its exit."""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from engine_support import registry
from registry_support import seed_image

import flyte_images


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


# Run in a new interpreter, as the `flyte-images` program runs: the modules it loaded, after one
# `build` of an images file.
_BUILD_AND_LIST = (
    "import json, sys\n"
    "from flyte_images._cli import main\n"
    "code = main(['build', sys.argv[1], '--json', '-q'])\n"
    "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
)


def _build_in_new_process(images: Path) -> tuple[dict[str, Any], set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _BUILD_AND_LIST, str(images)], check=False, capture_output=True, text=True, timeout=120
    )
    out = done.stdout.strip()
    assert out, done.stderr
    cache, _, last = out.rpartition("\n")
    listed = json.loads(last)
    assert listed["code"] == 0, done.stderr
    return json.loads(cache), set(listed["modules"])


def test_an_append_edit_loop_loads_neither_the_layer_reader_nor_pydantic(tmp_path: Path) -> None:
    """A second append build of an edited source folder answers what the base holds from the
    disk cache: the layer reader (tarfile) is never loaded, and pydantic never is."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("VALUE = 1\n")
    images = tmp_path / "images.py"
    with registry() as running:
        images.write_text(
            "from pathlib import Path\nfrom flyte_images import Image\n"
            f"app = (Image.from_base('busybox:1.36').clone(name='team/app', registry={running.host!r})\n"
            "       .with_commands(['true']).with_source_folder(Path(__file__).parent / 'src', dst='/app'))\n"
        )
        planned = flyte_images.build(runpy.run_path(str(images))["app"], dry_run=True)
        engine_part = re.search(r"the engine part (\S+/team/app:\w+)", planned.reason)
        assert engine_part, planned.reason
        # The engine part in the registry, as if built before: appending needs no engine.
        seed_image(running.host, "team/app", engine_part.group(1).rpartition(":")[2])
        first, _loaded = _build_in_new_process(images)
        (src / "app.py").write_text("VALUE = 2\n")
        second, loaded = _build_in_new_process(images)
    assert first["status"] == second["status"] == {"app": "built"}
    assert first["image_lookup"] != second["image_lookup"]
    assert not {"tarfile", "flyte_images._append.layerscan", "pydantic", "flyte_images._image.environment"} & loaded


def test_the_program_leaves_its_objects_to_the_exit_and_a_library_call_does_not(tmp_path: Path) -> None:
    """Run as the program (no argv), a command freezes the objects it made, so the collections
    at interpreter exit do not walk every object of its modules; called with argv (by a library
    or a test, whose process goes on) it freezes nothing."""
    images = tmp_path / "images.py"
    images.write_text("from flyte_images import Image\napp = Image.from_base('busybox:1.36')\n")
    script = (
        "import gc, sys\n"
        "from flyte_images._cli import main\n"
        "main(['id', sys.argv[1]])\n"
        "called = gc.get_freeze_count()\n"
        "sys.argv[1:] = ['id', sys.argv[1]]\n"
        "main()\n"
        "print(called, gc.get_freeze_count() > 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(images)], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip().splitlines()[-1] == "0 True", done.stdout + done.stderr
