"""The identifier: same inputs give the same tag everywhere; any change to the image changes it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import write_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flyte_images import Image, SourceNotFoundError
from flyte_images._image.identity import TAG_HEX_DIGITS
from flyte_images._plan.plan import image_digest

segment = st.text(alphabet="abc.-_", min_size=1, max_size=3).filter(lambda s: s not in (".", ".."))
rel_paths = st.lists(segment, min_size=1, max_size=3).map("/".join)
modes = st.sampled_from([0o644, 0o600, 0o755, 0o640, 0o700, 0o664])


def _no_file_dir_conflicts(files: dict[str, tuple[bytes, int]]) -> bool:
    names = set(files)
    return not any(other.startswith(name + "/") for name in names for other in names)


trees = st.dictionaries(rel_paths, st.tuples(st.binary(max_size=64), modes), min_size=1, max_size=8).filter(
    _no_file_dir_conflicts
)
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def folder_image(root: Path, **base: object) -> Image:
    return Image.from_debian_base(python_version=(3, 12), install_flyte=False, **base).with_source_folder(root)  # type: ignore[arg-type]


def tag(image: Image, *, cache: bool = False) -> str:
    return image_digest(image, use_stat_cache=cache)[:TAG_HEX_DIGITS]


_SCRIPT = """
import sys
from pathlib import Path
from flyte_images import Image
root = Path(sys.argv[1])
image = (
    Image.from_debian_base(python_version=(3, 12), install_flyte=False)
    .with_apt_packages("git")
    .with_source_folder(root)
    .with_env_vars({"A": "1"})
)
print(image.identifier)
"""


def _tag_in_subprocess(root: Path, cwd: Path, seed: str, ci: bool) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_SCRIPT), str(root)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=trees, shuffle_seed=st.integers(0, 1000))
def test_same_tag_across_processes_locations_orders_and_times(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, tuple[bytes, int]], shuffle_seed: int
) -> None:
    first = tmp_path_factory.mktemp("one") / "project"
    second = tmp_path_factory.mktemp("elsewhere") / "deeper" / "project"
    write_tree(first, files)
    order = list(files)
    random.Random(shuffle_seed).shuffle(order)
    write_tree(second, files, order)
    for path in second.rglob("*"):
        os.utime(path, (1_000_000 + shuffle_seed, 2_000_000 + shuffle_seed))
    tag_one = _tag_in_subprocess(first, cwd=first, seed="1", ci=False)
    tag_two = _tag_in_subprocess(second, cwd=Path("/"), seed="98765", ci=True)
    assert tag_one == tag_two
    assert len(tag_one) == 32 and int(tag_one, 16) >= 0


@SLOW
@given(files=trees, data=st.data())
def test_changing_any_byte_changes_the_tag(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, tuple[bytes, int]], data: st.DataObject
) -> None:
    root = tmp_path_factory.mktemp("t") / "src"
    write_tree(root, files)
    before = tag(folder_image(root))
    rel = data.draw(st.sampled_from(sorted(files)))
    content, _mode = files[rel]
    if content:
        index = data.draw(st.integers(0, len(content) - 1))
        changed = content[:index] + bytes([(content[index] + 1) % 256]) + content[index + 1 :]
    else:
        changed = b"\x00"
    (root / rel).write_bytes(changed)
    assert tag(folder_image(root)) != before


@SLOW
@given(files=trees, data=st.data())
def test_changing_any_mode_bit_changes_the_tag(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, tuple[bytes, int]], data: st.DataObject
) -> None:
    root = tmp_path_factory.mktemp("t") / "src"
    write_tree(root, files)
    before = tag(folder_image(root))
    rel = data.draw(st.sampled_from(sorted(files)))
    bit = data.draw(st.sampled_from([1 << i for i in range(12)]))
    (root / rel).chmod(files[rel][1] ^ bit)
    assert tag(folder_image(root)) != before


@SLOW
@given(files=trees)
def test_renaming_a_file_changes_the_tag(tmp_path_factory: pytest.TempPathFactory, files: dict) -> None:
    root = tmp_path_factory.mktemp("t") / "src"
    write_tree(root, files)
    before = tag(folder_image(root))
    rel = sorted(files)[0]
    (root / rel).rename(root / (rel + "x"))
    assert tag(folder_image(root)) != before


def test_moved_boundary_between_folder_and_file_name_changes_the_tag(tmp_path: Path) -> None:
    one, two = tmp_path / "one" / "src", tmp_path / "two" / "src"
    write_tree(one, {"ab/c": (b"same", 0o644)})
    write_tree(two, {"a/bc": (b"same", 0o644)})
    assert tag(folder_image(one)) != tag(folder_image(two))


def test_mtimes_and_location_do_not_matter(tmp_path: Path) -> None:
    files = {"a.py": (b"print(1)\n", 0o644), "pkg/b.py": (b"x = 2\n", 0o755)}
    one, two = tmp_path / "x" / "app", tmp_path / "y" / "z" / "app"
    write_tree(one, files)
    write_tree(two, files, ["pkg/b.py", "a.py"])
    os.utime(two / "a.py", (1, 1))
    assert tag(folder_image(one)) == tag(folder_image(two))


def test_the_folder_name_matters_because_it_is_the_destination(tmp_path: Path) -> None:
    files = {"a.py": (b"1", 0o644)}
    write_tree(tmp_path / "app", files)
    write_tree(tmp_path / "lib", files)
    assert tag(folder_image(tmp_path / "app")) != tag(folder_image(tmp_path / "lib"))


def test_ignored_files_do_not_change_the_tag_and_dockerignore_rules_do(tmp_path: Path) -> None:
    root = tmp_path / "src"
    write_tree(root, {"a.py": (b"1", 0o644), "data/big.bin": (b"x", 0o644)})
    (root / ".dockerignore").write_text("data\n")
    before = tag(folder_image(root))
    (root / "data" / "big.bin").write_bytes(b"changed")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "a.cpython-312.pyc").write_bytes(b"junk")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: x")
    assert tag(folder_image(root)) == before
    (root / ".dockerignore").write_text("data\n!data/big.bin\n")
    assert tag(folder_image(root)) != before


LAYER_VARIANTS = [
    lambda i: i.with_apt_packages("numpy", "pandas"),
    lambda i: i.with_apt_packages("numpypandas"),
    lambda i: i.with_pip_packages("numpy", "pandas"),
    lambda i: i.with_pip_packages("numpypandas"),
    lambda i: i.with_pip_packages("numpy", "pandas", pre=True),
    lambda i: i.with_pip_packages("numpy", "pandas", index_url="https://mirror.example/simple"),
    lambda i: i.with_pip_packages("numpy", "pandas", extra_index_urls="https://extra.example/simple"),
    lambda i: i.with_pip_packages("numpy", "pandas", extra_args="--no-deps"),
    lambda i: i.with_pip_packages("numpy", "pandas", secret_mounts="token"),
    lambda i: i.with_commands(["numpypandas"]),
    lambda i: i.with_commands(["numpy", "pandas"]),
    lambda i: i.with_commands(["pandas", "numpy"]),
    lambda i: i.with_env_vars({"numpy": "pandas"}),
    lambda i: i.with_env_vars({"numpypandas": ""}),
    lambda i: i.with_workdir("/numpypandas"),
    lambda i: i.with_workdir("/numpy"),
    lambda i: i.with_apt_packages("git").with_pip_packages("numpy"),
    lambda i: i.with_pip_packages("numpy").with_apt_packages("git"),
    lambda i: i.clone(platform=("linux/amd64", "linux/arm64")),
    lambda i: i.clone(platform=("linux/arm64",)),
    lambda i: i.clone(python_version=(3, 11)),
    lambda i: i.clone(base_image="python:3.12-slim-trixie"),
    lambda i: i,
]


def test_every_layer_argument_order_platform_and_base_changes_the_tag() -> None:
    base = Image.from_debian_base(python_version=(3, 12), install_flyte=False)
    tags = [tag(make(base)) for make in LAYER_VARIANTS]
    assert len(set(tags)) == len(tags)


def test_normalised_arguments_give_the_same_tag() -> None:
    base = Image.from_debian_base(python_version="3.12", install_flyte=False)
    assert tag(base.with_pip_packages("b", "a")) == tag(base.with_pip_packages("a", "b", "a"))
    assert tag(base.with_env_vars({"B": "2", "A": "1"})) == tag(base.with_env_vars({"A": "1", "B": "2"}))
    assert tag(base.clone(platform=("linux/arm64", "linux/amd64"))) == tag(
        base.clone(platform=["linux/amd64", "linux/arm64"])  # type: ignore[arg-type]
    )


def test_registry_and_name_are_not_part_of_the_tag() -> None:
    base = Image.from_debian_base(python_version=(3, 12), install_flyte=False).with_apt_packages("git")
    other = base.clone(registry="ghcr.io/acme", name="other")
    assert base.identifier == other.identifier
    assert other.uri == f"ghcr.io/acme/other:{base.identifier}"


def test_index_credentials_do_not_enter_the_tag() -> None:
    base = Image.from_debian_base(python_version=(3, 12), install_flyte=False)
    one = base.with_pip_packages("x", index_url="https://user:token1@pypi.example/simple")
    two = base.with_pip_packages("x", index_url="https://user:token2@pypi.example/simple")
    assert tag(one) == tag(two)


def test_uv_script_body_counts_not_only_its_header(tmp_path: Path) -> None:
    script = tmp_path / "tool.py"
    header = '# /// script\n# dependencies = ["httpx"]\n# ///\n'
    script.write_text(header + "print('v1')\n")
    image = Image.from_uv_script(script, name="tool", python_version=(3, 12))
    before = image.identifier
    script.write_text(header + "print('v2')\n")
    assert image.identifier != before  # recomputed, never cached on the object


def test_requirements_includes_count(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("numpy==2.0.0\n")
    (tmp_path / "requirements.txt").write_text("-r base.txt\npandas\n")
    image = Image.from_debian_base(python_version=(3, 12), install_flyte=False).with_requirements(
        tmp_path / "requirements.txt"
    )
    before = image.identifier
    (tmp_path / "base.txt").write_text("numpy==2.1.0\n")
    assert image.identifier != before


def test_dockerfile_context_files_count(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY app.txt /\n")
    (tmp_path / "app.txt").write_text("v1")
    (tmp_path / ".dockerignore").write_text("ignored.txt\n")
    image = Image.from_dockerfile(tmp_path / "Dockerfile", registry="localhost:5000", name="df")
    before = image.identifier
    (tmp_path / "ignored.txt").write_text("anything")
    assert image.identifier == before
    (tmp_path / "app.txt").write_text("v2")
    assert image.identifier != before


def test_a_missing_file_is_a_typed_error_naming_it(tmp_path: Path) -> None:
    image = Image.from_debian_base(python_version=(3, 12)).with_source_file(tmp_path / "nope.py")
    with pytest.raises(SourceNotFoundError, match=r"nope\.py"):
        _ = image.identifier


def test_stat_cache_sees_changes_and_ci_turns_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flyte_images._files import statcache as _files

    monkeypatch.setattr(_files, "_RACY_NS", 0)  # ctime cannot be set back: trust fresh files here
    root = tmp_path / "src"
    write_tree(root, {"a.py": (b"one", 0o644)})
    image = folder_image(root)
    cached = tag(image, cache=True)
    assert _files.shared_stat_cache(True).trees  # the cache really is in use
    assert tag(image, cache=True) == cached == tag(image, cache=False)
    (root / "a.py").write_bytes(b"three")  # new size: a new stat key
    assert tag(image, cache=True) != cached
    (root / "a.py").chmod(0o600)  # a mode change moves ctime
    assert tag(image, cache=True) == tag(image, cache=False)
    monkeypatch.setenv("CI", "true")
    from flyte_images._files.statcache import shared_stat_cache

    assert shared_stat_cache() is None
    monkeypatch.setenv("FLYTE_IMAGES_STAT_CACHE", "1")
    assert shared_stat_cache() is not None
