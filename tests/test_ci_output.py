"""Output a CI log can use: progress on stderr in every mode (also with --json), steps in the
Dockerfile's order with BuildKit's CACHED and times, a summary line per image, the JSON documents'
shape, the failing tool's own message first in an error (our hint last), and a warning when a
cache export is asked of a backend that cannot export."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
from engine_support import BUSYBOX, remove_image

import flyte_images
from flyte_images import Image
from flyte_images._build.hints import add_hint
from flyte_images._build.progress import Board
from flyte_images.builders.output import BuildOutput
from flyte_images.testing import FakeBuilder

PIP_RUN = (
    '[stage-0 3/3] RUN ["/bin/sh", "-c", "' + "export SSL_CERT_FILE=/run/secrets/ca " * 8 + 'pip install nosuchpkg"]'
)
PIP_FAILURE = f"""\
#7 {PIP_RUN}
#7 0.512 Collecting nosuchpkg
#7 1.020 ERROR: Could not find a version that satisfies the requirement nosuchpkg (from versions: none)
#7 1.021 ERROR: No matching distribution found for nosuchpkg
#7 ERROR: process "/bin/sh -c pip install nosuchpkg" did not complete successfully: exit code: 1
"""
UV_FAILURE = """\
#7 [3/3] RUN uv pip install --system nosuchpkg
#7 0.301 Using Python 3.11.2 environment at: /usr
#7 0.902 error: No solution found when resolving dependencies
#7 0.902   cause: Because nosuchpkg was not found in the package registry and you require nosuchpkg, we [...]
#7 ERROR: process "/bin/sh -c uv pip install --system nosuchpkg" did not complete successfully: exit code: 1
"""
# A cached rebuild on a BuildKit daemon (remote driver), as buildx printed it: [4/5] before [3/5].
CACHED_OUT_OF_ORDER = """\
#0 building with "flyte-images-3fa61cb7f778" instance using remote driver
#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 143B done
#1 DONE 0.0s
#4 [1/5] FROM docker.io/flyte-images/busybox:test@sha256:21dd
#4 resolve docker.io/flyte-images/busybox:test@sha256:21dd done
#4 DONE 0.0s
#6 [2/5] RUN echo hello; sleep 1; echo bye
#6 CACHED
#7 [4/5] RUN echo second
#7 CACHED
#8 [3/5] COPY f /f
#8 CACHED
#9 [5/5] RUN echo third
#9 0.067 third
#9 DONE 0.1s
"""


def _failed(transcript: str) -> str:
    output = BuildOutput((), lambda _event: None)
    for line in transcript.splitlines():
        output.feed(line)
    error = output.step_failed()
    add_hint(error)
    return str(error)


def test_a_pip_failure_starts_with_pips_own_message_and_ends_with_our_hint() -> None:
    lines = _failed(PIP_FAILURE).splitlines()
    assert lines[0] == "ERROR: No matching distribution found for nosuchpkg"
    assert lines[1].startswith("build failed at step [stage-0 3/3] RUN") and lines[1].endswith(
        "exit code 1; before that it printed:"
    )
    assert "Could not find a version" in lines[3]  # the rest of what the step printed follows
    assert lines[-1].startswith("hint: the package index has no 'nosuchpkg'")


def test_a_uv_failure_starts_with_its_error_and_the_cause_under_it() -> None:
    lines = _failed(UV_FAILURE).splitlines()
    assert lines[0] == "error: No solution found when resolving dependencies"
    assert lines[1].startswith("  cause: Because nosuchpkg was not found")
    assert (
        lines[2]
        == "build failed at step [3/3] RUN uv pip install --system nosuchpkg with exit code 1; before that it printed:"
    )
    assert lines[3] == "Using Python 3.11.2 environment at: /usr" and lines[-1].startswith("hint: ")


def test_plain_progress_shows_steps_in_order_with_cached_and_times() -> None:
    out = io.StringIO()
    with Board(out, "plain") as board:
        output = BuildOutput((), board.start("app", "app:1"))
        for line in CACHED_OUT_OF_ORDER.splitlines():
            output.feed(line)
        board.finish("app", "app:1", "built", 0.4)
    assert out.getvalue().splitlines() == [
        "[app] building app:1",
        '[app] building with "flyte-images-3fa61cb7f778" instance using remote driver',
        "[app] [internal] load build definition from Dockerfile  DONE 0.0s",
        "[app] [1/5] FROM docker.io/flyte-images/busybox:test@sha256:21dd  DONE 0.0s",
        "[app] [2/5] RUN echo hello; sleep 1; echo bye  CACHED",
        "[app] [3/5] COPY f /f  CACHED",
        "[app] [4/5] RUN echo second  CACHED",
        "[app] [5/5] RUN echo third",  # it printed: its title shows while it runs
        "[app] [5/5] DONE 0.1s",
        "[app] built in 0.4 s",
    ]
    assert board.cached("app") == "3 of 4 steps cached"  # FROM is no layer-cache hit


def test_a_pull_shows_its_step_while_it_runs_and_a_quick_step_keeps_one_line() -> None:
    out = io.StringIO()
    with Board(out, "plain") as board:
        output = BuildOutput((), board.start("app", "app:1"))
        for line in (
            "#4 [1/2] FROM docker.io/library/python:3.11",
            "#4 resolve docker.io/library/python:3.11 0.0s done",
            "#4 sha256:abc 1.05MB / 29.13MB 0.2s",
            "#4 sha256:abc 29.13MB / 29.13MB 1.4s done",
            "#4 DONE 1.6s",
            "#5 [internal] load build context",
            "#5 transferring context: 57B 0.0s done",
            "#5 DONE 0.0s",
        ):
            output.feed(line)
    assert out.getvalue().splitlines()[1:] == [
        "[app] [1/2] FROM docker.io/library/python:3.11",
        "[app] [1/2] DONE 1.6s",
        "[app] [internal] load build context  DONE 0.0s",
    ]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "flyte_images._cli", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=600, cwd=cwd)


def _shape(value: Any) -> Any:
    """The JSON document with every value replaced by its type's name (keys kept)."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return type(value).__name__


def test_dry_run_json_keeps_progress_and_summary_on_stderr(tmp_path: Path) -> None:
    (tmp_path / "images.py").write_text(
        "from flyte_images import Image\n"
        f"app = Image.from_base({BUSYBOX!r}).clone(name='app', registry='127.0.0.1:1')\n"
    )
    target = str(tmp_path / "images.py")
    done = _cli("build", target, "--dry-run", "--json", "--no-require-check")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert _shape(doc) == {
        "build_run_ids": {},
        "digests": {},
        "identifiers": {},
        "image_lookup": {},
        "nodes": {},
        "reasons": {"app": "str"},
        "status": {"app": "str"},
        "waited": {},
    }
    assert re.search(r"^app\s+planned\s+-\s+\(would build 127\.0\.0\.1:1/app:[0-9a-f]{32}", done.stderr, re.M)
    quiet = _cli("build", target, "--dry-run", "--json", "--no-require-check", "--progress", "quiet")
    assert json.loads(quiet.stdout) == doc and "planned" not in quiet.stderr
    both = _cli("build", target, "--dry-run", "-q", "--progress", "plain")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_a_dry_run_names_a_misconfigured_builder_for_the_image_it_would_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "images.py").write_text(
        "from flyte_images import Image\n"
        f"app = Image.from_base({BUSYBOX!r}).clone(name='app', registry='127.0.0.1:1').with_commands(['true'])\n"
    )
    monkeypatch.setenv("FLYTE_IMAGES_BUILDER", "no-such-builder")
    done = _cli("build", str(tmp_path / "images.py"), "--dry-run", "--json", "--no-require-check")
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == {"app": "failed"} and "no image builder named 'no-such-builder'" in doc["reasons"]["app"]


def test_id_and_exists_json_shapes(tmp_path: Path) -> None:
    (tmp_path / "images.py").write_text(
        f"from flyte_images import Image\napp = Image.from_base({BUSYBOX!r}).clone(name='app')\n"
        "ref = Image.from_base('python:3.12-slim')\n"
    )
    ids = _cli("id", str(tmp_path / "images.py"), "--json")
    assert ids.returncode == 0, ids.stderr
    row = {"target": "str", "name": "str", "reference": "bool", "identifier": "str", "uri": "str"}
    assert _shape(json.loads(ids.stdout)) == {"images": [row, {**row, "identifier": "NoneType"}]}
    exists = _cli("exists", "127.0.0.1:1/app:1", "--json")
    assert exists.returncode == 2  # cannot tell: nothing answers there
    assert _shape(json.loads(exists.stdout)) == {
        "images": [{"reference": "str", "state": "str", "digest": "NoneType", "platforms": [], "reason": "str"}]
    }


def _cached_image(tmp_path: Path) -> Image:
    (tmp_path / "a.py").write_text("a")
    image = Image.from_base(BUSYBOX).clone(name="cached", registry="registry.example")
    return image.with_source_file(tmp_path / "a.py")


def test_a_registry_cache_a_backend_cannot_export_is_a_warning(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"cannot export a layer cache, so the cache is never written"):
        flyte_images.build(
            _cached_image(tmp_path), builder=FakeBuilder(), cache="registry", quiet=True, require_check=False
        )


def test_a_cache_to_a_backend_cannot_export_is_a_warning_without_its_settings(tmp_path: Path) -> None:
    secret = f"s3cr3t{uuid.uuid4().hex}"
    cache_to = (f"type=s3,region=eu-west-1,bucket=b,secret_access_key={secret}",)
    with pytest.warns(UserWarning, match=r"cache_to \(type=s3\) asks the fake backend") as seen:
        flyte_images.build(
            _cached_image(tmp_path), builder=FakeBuilder(), cache_to=cache_to, quiet=True, require_check=False
        )
    assert all(secret not in str(w.message) for w in seen)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an inline cache is written with the image: no warning
        flyte_images.build(
            _cached_image(tmp_path), builder=FakeBuilder(), cache_to=("type=inline",), quiet=True, require_check=False
        )


# ----- the real engine, stderr not a terminal ----------------------------------------------------


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_ci_build_shows_steps_cached_markers_times_and_a_summary_beside_json(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    (tmp_path / "images.py").write_text(
        "from flyte_images import Image\n"
        f"img = Image.from_base({BUSYBOX!r}).clone(name='fi-test-ci')"
        f".with_commands(['echo first-{marker}', 'echo second-{marker}'])\n"
    )
    first = _cli("build", "images.py", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    uri = doc["image_lookup"]["img"]
    try:
        assert _shape(doc) == {
            "build_run_ids": {},
            "digests": {"img": "str"},
            "identifiers": {"img": "str"},
            "image_lookup": {"img": "str"},
            "nodes": {},
            "reasons": {"img": "str"},
            "status": {"img": "str"},
            "waited": {},
        }
        assert doc["status"] == {"img": "built"} and uri == f"fi-test-ci:{doc['identifiers']['img']}"
        steps = re.findall(r"^\[img\] \[(\d)/3\] (?:RUN .*|DONE [0-9.]+s)$", first.stderr, re.M)
        assert steps == ["2", "2", "3", "3"], first.stderr  # each RUN step ran: its title, then its time
        assert re.search(rf"^img\s+built\s+{uri}\s+\(built in [0-9.]+ s, 0 of 2 steps cached\)$", first.stderr, re.M)

        again = _cli("build", "images.py", "--json", "--force", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        cached = re.findall(r"^\[img\] \[(\d)/3\] RUN .*  CACHED$", again.stderr, re.M)
        assert cached == ["2", "3"], again.stderr
        assert re.search(r"^img\s+built\s+\S+\s+\(built in [0-9.]+ s, 2 of 2 steps cached\)$", again.stderr, re.M)

        fresh = _cli("build", "images.py", "--force", "--no-cache", "--progress", "plain", cwd=tmp_path)
        assert fresh.returncode == 0, fresh.stderr
        assert fresh.stdout.strip() == uri  # the identifier does not change
        assert re.search(r"^img\s+built\s+\S+\s+\(built in [0-9.]+ s, 0 of 2 steps cached\)$", fresh.stderr, re.M)
    finally:
        remove_image(uri)


@pytest.mark.engine
@pytest.mark.usefixtures("engine")
def test_a_failed_step_says_the_tools_message_first_and_the_hint_last(tmp_path: Path) -> None:
    script = (
        f"echo run {uuid.uuid4().hex}; echo Collecting nosuchpkg; "
        "echo 'ERROR: No matching distribution found for nosuchpkg' >&2; exit 1"
    )
    (tmp_path / "images.py").write_text(
        "from flyte_images import Image\n"
        f"img = Image.from_base({BUSYBOX!r}).clone(name='fi-test-ci-fail').with_commands([{script!r}])\n"
    )
    done = _cli("build", "images.py", cwd=tmp_path)
    assert done.returncode == 1
    block = done.stderr[done.stderr.index("\nerror: img ") + 1 :].splitlines()
    assert re.fullmatch(
        r"error: img \(fi-test-ci-fail:[0-9a-f]{32}\): ERROR: No matching distribution found for nosuchpkg", block[0]
    )
    assert block[1].startswith("build failed at step [2/2] RUN") and "with exit code 1" in block[1]
    hint = next(i for i, line in enumerate(block) if line.startswith("hint: "))
    assert "no 'nosuchpkg'" in block[hint] and block[hint + 1].startswith("img  failed")
