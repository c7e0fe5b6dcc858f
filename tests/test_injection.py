"""No string reaches a Dockerfile line that could add, end or join an instruction, wherever it
comes from: an argument, the environment, the config file, or the template."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_render import CASES, project  # noqa: F401 - the fixture
from test_render_fuzz import instructions as parse_instructions

from flyte_images import Image, InvalidLayerArgument, _config
from flyte_images._plan.plan import plan

LINE_BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
DEBIAN = Image.from_debian_base(python_version=(3, 12), install_flyte=False)


@pytest.mark.parametrize("brk", LINE_BREAKS)
def test_a_line_break_in_a_cloned_base_image_is_refused(brk: str) -> None:
    with pytest.raises(InvalidLayerArgument, match="base_image"):
        DEBIAN.clone(base_image=f"debian:bookworm{brk}RUN touch /pwned")


@pytest.mark.parametrize("brk", LINE_BREAKS)
def test_a_line_break_in_from_base_is_refused(brk: str) -> None:
    with pytest.raises(InvalidLayerArgument, match="image_uri"):
        Image.from_base(f"debian:bookworm{brk}RUN touch /pwned")


@pytest.mark.parametrize("brk", ["\n", "\u2028", "\r"])
def test_a_line_break_in_the_base_image_from_the_environment_is_refused(
    brk: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_BASE_IMAGE", f"python:{{python_version}}-slim{brk}RUN touch /pwned")
    _config.reset()
    with pytest.raises(InvalidLayerArgument, match="FLYTE_IMAGES_BASE_IMAGE"):
        Image.from_debian_base(python_version=(3, 12), install_flyte=False)


def test_a_line_break_in_the_base_image_from_the_config_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "flyte-images.toml"
    config.write_text('base_image = "python:{python_version}-slim\\nRUN touch /pwned"\n')
    monkeypatch.setenv("FLYTE_IMAGES_CONFIG", str(config))
    _config.reset()
    with pytest.raises(InvalidLayerArgument, match="config file"):
        Image.from_debian_base(python_version=(3, 12), install_flyte=False)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.from_base("debian:bookworm\\"),
        lambda: DEBIAN.clone(base_image="debian:bookworm\\"),
    ],
)
def test_a_trailing_backslash_in_a_base_image_is_refused(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidLayerArgument, match="backslash"):
        make()


def test_a_trailing_backslash_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYTE_IMAGES_BASE_IMAGE", "python:{python_version}-slim\\")
    _config.reset()
    with pytest.raises(InvalidLayerArgument, match="backslash"):
        Image.from_debian_base(python_version=(3, 12), install_flyte=False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_parsed_instruction_count_equals_what_was_rendered(
    name: str,
    project: Path,  # noqa: F811 - the fixture imported from test_render
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(project)
    made = plan(CASES[name](project))
    parsed = parse_instructions(made.dockerfile)
    assert len(parsed) == len(made.instructions)
    assert parsed == [text.replace("\\\n", "") for text in made.instructions]


@settings(max_examples=max(300, int(os.environ.get("FUZZ_EXAMPLES", "0")) // 10), deadline=None)
@given(st.text(min_size=1, max_size=30))
def test_any_base_image_is_refused_or_renders_one_from_line(value: str) -> None:
    try:
        image = Image.from_base(value).clone(name="x").with_env_vars({"A": "1"})
        made = plan(image)
    except InvalidLayerArgument:
        return
    parsed = parse_instructions(made.dockerfile)
    assert len(parsed) == len(made.instructions) == 3
    assert parsed[0] == f"FROM {value.strip()}"
