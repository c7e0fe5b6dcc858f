"""Fuzzing what users write besides arguments: .dockerignore files, uv script headers, config
files and command lines. Each input ends in a typed error naming what is wrong, or in a plan
whose instructions are exactly the ones rendered; never an untyped exception or a traceback.
`just fuzz` runs ten times the CI budget (FUZZ_EXAMPLES)."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_render_fuzz import instructions as parse_instructions

from flyte_images import FlyteImagesError, Image, _config
from flyte_images._cli import main
from flyte_images._plan.plan import plan

BUDGET = settings(
    max_examples=max(150, int(os.environ.get("FUZZ_EXAMPLES", "0")) // 50),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SPECIALS = ["\n", "\r", "!", "*", "**", "?", "[", "]", "\\", "/", "..", ".", "#", " ", "\u2028", "\x00", "é", "$"]
text = st.lists(st.one_of(st.text(max_size=5), st.sampled_from(SPECIALS)), max_size=12).map("".join)


def _consistent(image: Image) -> None:
    made = plan(image)
    assert len(parse_instructions(made.dockerfile)) == len(made.instructions)


@BUDGET
@given(patterns=text)
def test_any_dockerignore_text_gives_a_plan_or_a_typed_error(patterns: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "src" / "pkg").mkdir(parents=True)
        (root / "src" / "pkg" / "a.py").write_text("a")
        (root / "src" / "b.txt").write_text("b")
        (root / ".dockerignore").write_bytes(patterns.encode("utf-8", "surrogatepass"))
        image = Image.from_base("python:3.12-slim").clone(name="fuzz").with_dockerignore(root / ".dockerignore")
        with contextlib.suppress(FlyteImagesError):
            _consistent(image.with_source_folder(root / "src"))


@BUDGET
@given(header=text, deps=st.lists(text, max_size=3))
def test_any_uv_script_header_gives_a_plan_or_a_typed_error(header: str, deps: list[str]) -> None:
    listed = ", ".join(repr(d) for d in deps)
    body = f"# /// script\n# {header}\n# dependencies = [{listed}]\n# ///\nprint('hi')\n"
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "job.py"
        script.write_bytes(body.encode("utf-8", "surrogatepass"))
        with contextlib.suppress(FlyteImagesError):
            _consistent(Image.from_uv_script(script, name="fuzz", python_version=(3, 12)))


@BUDGET
@given(key=st.sampled_from(["registry", "image_builder", "base_image", "ca_bundle", "cache", "nope"]), value=text)
def test_any_config_value_is_taken_or_refused_by_name(key: str, value: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "flyte-images.toml"
        escaped = value.encode("unicode_escape").decode("ascii").replace('"', '\\"')
        config.write_text(f'{key} = "{escaped}"\n')
        try:
            _config.reset()
            _config.load_file(config)
            _config.configured_registry()
            _config.configured_cache()
            Image.from_debian_base(python_version=(3, 12), install_flyte=False)
        except FlyteImagesError:
            pass
        finally:
            _config.reset()


FLAGS = ["--dry-run", "--json", "--force", "--platform", "--output", "--concurrency", "--builder", "--cache", "-q"]


@BUDGET
@given(argv=st.lists(st.one_of(st.sampled_from(FLAGS), text), max_size=5))
def test_any_command_line_exits_with_a_meaningful_code(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "images.py"
        target.write_text("from flyte_images import Image\nimg = Image.from_base('python:3.12-slim')\n")
        here = os.getcwd()
        os.chdir(tmp)  # a fuzzed `--output NAME` writes a file: into the temporary folder
        try:
            for command in (["build", str(target), "--dry-run"], ["id", str(target)], ["dockerfile", str(target)]):
                code, err = _run_cli([*command, *argv])
                assert code in (0, 1, 2)
                assert "Traceback" not in err
        finally:
            os.chdir(here)


def _run_cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    return code, err.getvalue()


CONSTRUCTORS: dict[str, Callable[[Any], Image]] = {
    "from_base.image_uri": lambda v: Image.from_base(v).clone(name="fuzz"),
    "clone.name": lambda v: Image.from_base("python:3.12-slim").clone(name=v),
    "clone.registry": lambda v: Image.from_base("python:3.12-slim").clone(name="fuzz", registry=v),
    "clone.base_image": lambda v: Image.from_base("python:3.12-slim").clone(name="fuzz", base_image=v),
    "from_debian_base.python_version": lambda v: Image.from_debian_base(python_version=v, install_flyte=False),
    "from_debian_base.flyte_version": lambda v: Image.from_debian_base(python_version=(3, 12), flyte_version=v),
    "from_debian_base.name": lambda v: Image.from_debian_base(python_version=(3, 12), install_flyte=False, name=v),
    "from_ref_name.name": Image.from_ref_name,
    "with_source_folder.dst": lambda v: (
        Image.from_base("python:3.12-slim")
        .clone(name="fuzz")
        .with_source_folder(Path(__file__).parent / "snapshots", dst=v)
    ),
}


@BUDGET
@given(name=st.sampled_from(sorted(CONSTRUCTORS)), value=text)
def test_any_constructor_argument_is_refused_by_name_or_renders_whole(name: str, value: str) -> None:
    """A constructor argument either raises a typed error at the call (or when the uri is made,
    for references that must resolve), or gives an image whose Dockerfile has exactly the
    instructions rendered and whose uri carries the value as given."""
    try:
        image = CONSTRUCTORS[name](value)
        if image.is_reference:
            return
        made = plan(image)
    except FlyteImagesError:
        return
    assert len(parse_instructions(made.dockerfile)) == len(made.instructions)
    if name in ("clone.name", "from_debian_base.name"):
        assert made.uri.split(":")[0].endswith(value.strip())  # names are taken without surrounding spaces
