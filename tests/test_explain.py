"""explain: each image's history of builds, keyed by the image as described (not its repository)."""

from __future__ import annotations

import importlib
import json
import uuid
from pathlib import Path

import pytest

import flyte_images
from flyte_images import Image
from flyte_images._cli import main
from flyte_images._plan.explain import breakdown, compare, history, previous_build
from flyte_images._plan.plan import description_key, plan
from flyte_images.testing import FakeBuilder


def _image(root: Path) -> Image:
    return Image.from_base("python:3.11-slim").clone(name="ex").with_source_folder(root / "src")


def test_arguments_added_layers_and_modes_are_explained(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "run.sh").write_text("echo\n")
    first = breakdown(plan(_image(tmp_path).with_apt_packages("git")))
    (tmp_path / "src" / "run.sh").chmod(0o755)
    second = breakdown(plan(_image(tmp_path).with_apt_packages("git", "curl").with_env_vars({"A": "1"})))
    rows = {row["part"]: row for row in compare(first, second)}
    assert rows["base"]["status"] == rows["target"]["status"] == "unchanged"
    assert rows["1 source_folder"]["changes"] == ["src/run.sh mode 644 -> 755"]
    assert rows["2 apt"]["changes"] == ["arguments: packages=git -> packages=curl git"]
    assert rows["3 env"]["status"] == "added"


def test_after_a_rebuild_explain_still_says_why_it_happened(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("one\n")
    image = _image(tmp_path)
    fake = FakeBuilder()
    first = flyte_images.build(image, builder=fake, quiet=True)
    (tmp_path / "src" / "a.py").write_text("two\n")
    second = flyte_images.build(image, builder=fake, quiet=True)
    key = description_key(image)
    assert [b.uri for b in history(key)] == [first.uri, second.uri]
    current = breakdown(plan(image))
    previous, last = previous_build(key, current)
    assert last is not None and last.uri == second.uri  # nothing changed since the last build ...
    assert previous is not None and previous.uri == first.uri  # ... which was made because of a.py
    rows = {row["part"]: row for row in compare(previous, current)}
    assert rows["1 source_folder"]["changes"][0].startswith("src/a.py changed: sha ")


def test_two_images_sharing_a_name_have_separate_histories(tmp_path: Path) -> None:
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.py").write_text(folder)
    base = Image.from_base("python:3.11-slim").clone(name="flyte")
    one, two = base.with_source_folder(tmp_path / "one"), base.with_source_folder(tmp_path / "two")
    fake = FakeBuilder()
    flyte_images.build(one, builder=fake, quiet=True)
    flyte_images.build(two, builder=fake, quiet=True)
    assert len(history(description_key(one))) == len(history(description_key(two))) == 1
    assert previous_build(description_key(one), breakdown(plan(one)))[0] is None  # no false changes


def test_explain_cli_reports_the_build_and_what_led_to_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("one\n")
    module = f"explain_images_{uuid.uuid4().hex[:8]}"  # a name no other test has imported
    (tmp_path / f"{module}.py").write_text(
        "from pathlib import Path\nfrom flyte_images import Image\n"
        "app = Image.from_base('python:3.11-slim').clone(name='ex')"
        ".with_source_folder(Path(__file__).parent / 'src')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = importlib.import_module(module).app

    fake = FakeBuilder()
    flyte_images.build(app, builder=fake, quiet=True)
    (tmp_path / "src" / "a.py").write_text("two\n")
    flyte_images.build(app, builder=fake, quiet=True)
    capsys.readouterr()
    assert main(["explain", f"{tmp_path / module}.py:app", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)["images"]
    assert report["built"] is True and report["previous_uri"] != report["uri"]
    changed = [row for row in report["parts"] if row["status"] == "changed"]
    assert [row["part"] for row in changed] == ["1 source_folder"]


def test_a_build_appends_its_record_and_the_history_keeps_the_last_ten(tmp_path: Path) -> None:
    """A build adds one line to its image's history (what earlier builds wrote stays as it was,
    so a build costs the same however long the history); explain reads the last ten builds, the
    same identifier twice in a row counting once."""
    from flyte_images._plan.explain import HISTORY, _history_path, save_record

    src = tmp_path / "a.txt"
    key = None
    for n in range(HISTORY + 3):
        src.write_text(f"version {n}\n")
        image = Image.from_debian_base(install_flyte=False, name="hist").with_source_file(src)
        key = description_key(image)
        record = breakdown(plan(image))
        save_record(key, record)
        if n == 0:
            first = _history_path(key).read_bytes()
        save_record(key, record)  # found again, unchanged: one build
    assert key is not None
    assert _history_path(key).read_bytes().startswith(first)
    builds = history(key)
    assert len(builds) == HISTORY and len({b.identifier for b in builds}) == HISTORY
    assert builds[-1].identifier == record.identifier
