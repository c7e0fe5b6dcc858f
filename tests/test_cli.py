"""The `flyte-images` command: output for people, JSON for machines, exit codes that mean something."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flyte_images import Image
from flyte_images._cli import main

IMAGES = """
from pathlib import Path
from flyte_images import Image
here = Path(__file__).parent
base = Image.from_base("python:3.12-slim")
app = Image.from_debian_base(python_version=(3, 12), install_flyte=False, name="app").with_source_file(
    here / "main.py"
)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "main.py").write_text("print('hi')\n")
    (tmp_path / "images.py").write_text(IMAGES)
    return tmp_path


def _expected_app_tag(project: Path) -> str:
    image = Image.from_debian_base(python_version=(3, 12), install_flyte=False, name="app")
    return image.with_source_file(project / "main.py").identifier


def test_id_lists_every_image_with_its_uri(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["id", str(project / "images.py")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["base", "python:3.12-slim", "(existing", "image,", "not", "built)"]
    assert out[1].split() == ["app", f"app:{_expected_app_tag(project)}"]


def test_id_json_for_one_named_image(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["id", f"{project / 'images.py'}:app", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (row,) = doc["images"]
    assert row["name"] == "app" and row["identifier"] == _expected_app_tag(project)
    assert row["uri"] == f"app:{row['identifier']}"


def test_id_changes_when_the_source_changes(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["id", f"{project / 'images.py'}:app", "--json"])
    first = json.loads(capsys.readouterr().out)["images"][0]["identifier"]
    (project / "main.py").write_text("print('changed')\n")
    main(["id", f"{project / 'images.py'}:app", "--json", "--no-stat-cache"])
    assert json.loads(capsys.readouterr().out)["images"][0]["identifier"] != first


def test_a_broken_image_exits_1_and_says_why(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "main.py").unlink()
    assert main(["id", str(project / "images.py")]) == 1
    captured = capsys.readouterr()
    assert "main.py does not exist" in captured.err
    assert "python:3.12-slim" in captured.out  # the good image is still reported


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing.py", "does not exist"),
        ("images.py:nope", "defines no 'nope'; the Images and Environments it defines: base, app"),
        ("not a module!", "neither an existing .py file nor a module name"),
    ],
)
def test_bad_targets_exit_2(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    target: str,
    message: str,
) -> None:
    monkeypatch.chdir(project)
    assert main(["id", target]) == 2
    assert message in capsys.readouterr().err


def test_module_targets_load_from_the_current_folder(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    assert main(["id", "images:app"]) == 0
    assert capsys.readouterr().out.startswith("app")


def test_help_has_examples_and_exit_codes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flyte_images._cli", "id", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "examples:" in result.stdout and "--json" in result.stdout
    top = subprocess.run(
        [sys.executable, "-m", "flyte_images._cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "exit codes" in top.stdout


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().out


def test_build_dry_run_reports_the_plan(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = project / "image-cache.json"
    assert main(["build", f"{project / 'images.py'}:app", "--dry-run", "--json", "--output", str(output)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["image_lookup"] == {}  # nothing exists yet: a plan records no uri as an image
    uri = f"app:{_expected_app_tag(project)}"
    assert (
        doc["status"] == {"app": "planned"} and doc["reasons"]["app"] == f"would build {uri} (not in the local engine)"
    )
    assert json.loads(output.read_text()) == doc


def test_build_plans_environments_and_their_dependencies(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "envs.py").write_text(
        "import images\n"
        "from flyte_images import TaskEnvironment\n"
        "shared = TaskEnvironment('shared', image=images.app)\n"
        "main_env = TaskEnvironment('main', image=images.app, depends_on=[shared])\n"
        "ref_env = TaskEnvironment('ref', image='python:3.12-slim')\n"
    )
    assert main(["build", str(project / "envs.py"), "--dry-run"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["main", "planned"], ["ref", "reference"], ["shared", "planned"],
    ]  # fmt: skip
    assert lines[1].split()[2] == "python:3.12-slim"
    assert captured.out == "python:3.12-slim\n"  # stdout: only images that exist


def test_build_reports_a_broken_image_and_exits_1(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "main.py").unlink()
    assert main(["build", f"{project / 'images.py'}:app", "--dry-run"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("main.py does not exist") == 1 and captured.out == ""


def test_an_output_file_that_cannot_be_written_fails_cleanly(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / ".cache.json.tmp").mkdir()  # where the file is written first, then renamed
    assert main(["build", f"{project / 'images.py'}:app", "--dry-run", "--output", str(project / "cache.json")]) == 1
    err = capsys.readouterr().err
    assert "cannot write it" in err and "Traceback" not in err and not (project / "cache.json").exists()
    assert main(["build", f"{project / 'images.py'}:app", "--dry-run", "--output", "a\0b"]) == 2
    assert "NUL" in capsys.readouterr().err


def test_dockerfile_prints_and_writes_the_context(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    context = project / "ctx"
    assert main(["dockerfile", f"{project / 'images.py'}:app", "--context", str(context)]) == 0
    text = capsys.readouterr().out
    assert text == (context / "Dockerfile").read_text()
    assert (context / "_fi" / "1" / "main.py").read_text() == "print('hi')\n"
    assert (context / "_fi" / "uv" / "amd64" / "uv").stat().st_mode & 0o111
    assert main(["dockerfile", f"{project / 'images.py'}:app", "--context", str(context)]) == 2  # not empty: usage


def test_json_output_stays_one_document_when_the_target_prints(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "noisy.py").write_text(
        "import logging, os, sys\n"
        "print('hello from the module')\n"
        "os.write(1, b'raw bytes on fd 1\\n')\n"
        "logging.basicConfig(stream=sys.stdout)\n"
        "logging.warning('a log line')\n"
        "from flyte_images import Image\n"
        "img = Image.from_base('python:3.12-slim')\n"
    )
    for command in (["build", "--dry-run", "--json"], ["id", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "flyte_images._cli", command[0], str(tmp_path / "noisy.py"), *command[1:]],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        json.loads(done.stdout)  # exactly one JSON document
        assert "hello from the module" in done.stderr and "raw bytes on fd 1" in done.stderr


@pytest.mark.parametrize("command", ["id", "dockerfile", "build", "exists", "explain"])
def test_a_command_parses_alone_as_in_the_whole_parser(command: str) -> None:
    """`main` sets up only the command named first (and loads only its module): its help,
    usage and errors are the ones the whole parser gives."""
    from flyte_images._cli import build_parser

    def outcome(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[object, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                result: object = vars(parser.parse_args(argv))
            except SystemExit as exc:
                result = exc.code
        return result, out.getvalue(), err.getvalue()

    for argv in ([command, "--help"], [command], [command, "t.py", "--no-such-flag"], [command, "t.py", "--json"]):
        assert outcome(build_parser(only=command), argv) == outcome(build_parser(), argv), argv
