"""explain's comparison, on records written without an engine."""

from __future__ import annotations

from pathlib import Path

from flyte_images import Image
from flyte_images._explain import breakdown as _breakdown
from flyte_images._explain import compare, last_record, save_record
from flyte_images._plan import plan


def breakdown(image: Image):
    return _breakdown(plan(image))


def _image(root: Path) -> Image:
    return Image.from_base("python:3.11-slim").clone(name="ex").with_source_folder(root / "src")


def test_arguments_added_layers_and_modes_are_explained(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "run.sh").write_text("echo\n")
    first = _image(tmp_path).with_apt_packages("git")
    save_record(breakdown(first))
    record = last_record(first.uri)
    assert record is not None and record.uri == first.uri

    (tmp_path / "src" / "run.sh").chmod(0o755)
    second = _image(tmp_path).with_apt_packages("git", "curl").with_env_vars({"A": "1"})
    rows = {row["part"]: row for row in compare(last_record(second.uri), breakdown(second))}
    assert rows["base"]["status"] == rows["target"]["status"] == "unchanged"
    assert rows["1 source_folder"]["changes"] == ["src/run.sh mode 644 -> 755"]
    assert rows["2 apt"]["changes"] == ["arguments: packages=git -> packages=curl git"]
    assert rows["3 env"]["status"] == "added"


def test_no_record_yet(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    image = _image(tmp_path)
    assert last_record(image.uri) is None
    assert {row["status"] for row in compare(None, breakdown(image))} == {"no record"}
