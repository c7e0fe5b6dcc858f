"""Against real BuildKit: the quoting rules the fuzz test relies on, and the staged context.

1. Values rendered into ENV, WORKDIR, COPY and RUN come out of the built image exactly, and the
   fuzz test's readers (read_double_quoted, read_copy_word) agree with BuildKit on them.
2. A source folder with ignored files, symlinks, executables and empty folders is copied exactly
   as `docker build` copies the same folder with the same rules written as a .dockerignore.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from engine_support import BUSYBOX, docker, run_in
from test_engine_build import make_tree
from test_render_fuzz import instructions, read_copy_word, read_double_quoted

import flyte_images
from flyte_images import Image
from flyte_images._files.ignore import DEFAULT_EXCLUDES
from flyte_images._plan.plan import plan as render

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("engine")]

TRICKY = [
    'plain', 'two words', 'q"uote', "s'ingle", "back\\slash", "trail\\", "\\\\double", "$HOME", "${HOME}x",
    "$(id)", "`id`", "a#b", "ünïcödé", "\u2028sep", "x\\$y", "100%", "semi;colon", "[br]",
]  # fmt: skip


def test_env_workdir_copy_and_run_values_come_out_exactly(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    image = Image.from_base(BUSYBOX).clone(name="fi-test-quoting")
    env = {f"V{i}": value for i, value in enumerate(TRICKY)}
    image = image.with_env_vars(env)
    copy_targets = [f"/q/{i}-{v.replace('/', '_')}" for i, v in enumerate(TRICKY) if "\t" not in v]
    for target in copy_targets:
        image = image.with_source_file(tmp_path / "f", dst=target)
    image = image.with_workdir("/w/" + "x\\$y q\"'")
    image = image.with_commands(["printf '%s' 'it''s' > /run-check; echo \"$V3\" >> /run-check"])
    dockerfile = render(image).dockerfile

    for ins in instructions(dockerfile):  # the fuzz test's readers agree with what is built
        if ins.startswith("ENV "):
            for match in re.finditer(r'(V\d+)=("(?:[^"\\]|\\.)*")', ins):
                assert read_double_quoted(match.group(2)) == env[match.group(1)]
        if ins.startswith("COPY "):
            assert read_copy_word(json.loads(ins[5:])[1]).rstrip("/") in copy_targets

    uri = flyte_images.build(image, force=True, quiet=True)
    inspect = json.loads(docker("image", "inspect", uri).stdout)[0]["Config"]
    got = dict(line.split("=", 1) for line in inspect["Env"] if line.startswith("V"))
    assert got == env
    assert inspect["WorkingDir"] == "/w/x\\$y q\"'"
    listed = run_in(uri, 'for f in /q/*; do printf "%s\\n" "${f#/q/}"; done').split("\n")[:-1]
    assert sorted(listed) == sorted(t[len("/q/") :] for t in copy_targets)
    assert run_in(uri, "cat /run-check") == "its" + env["V3"] + "\n"  # the ENV value, expanded at run time


def _listing(uri: str, path: str) -> list[str]:
    """'path type mode size target' of everything below `path` (busybox tools only)."""
    script = (
        f"cd {path} && find . -mindepth 1 | sort | while read -r p; do "
        'if [ -L "$p" ]; then t=$(readlink "$p"); else t=""; fi; '
        'stat -c "%n|%F|%a|%s" "$p" | tr -d "\\n"; echo "|$t"; done'
    )
    rows = run_in(uri, script).splitlines()
    # a folder's size is the filesystem's business, not the copy's
    return [re.sub(r"\|directory\|(\d+)\|\d+\|", r"|directory|\1||", row) for row in rows]


def test_staged_folder_equals_what_docker_build_copies(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    (tree / "nested" / ".hidden").write_text("h")
    (tree / "nested" / "a" / "skip.tmp").write_text("t")
    user_rules = (tree / ".dockerignore").read_text() + "**/*.tmp\n"
    (tree / ".dockerignore").write_text(user_rules)

    ours = flyte_images.build(
        Image.from_base(BUSYBOX).clone(name="fi-test-ctx-ours").with_source_folder(tree, dst="/dst"),
        force=True,
        quiet=True,
    )

    # The hand-written equivalent: the folder itself is the context, with our default excludes
    # followed by the folder's own rules as its .dockerignore.
    by_hand = tmp_path / "by-hand"
    subprocess.run(["cp", "-a", str(tree), str(by_hand)], check=True)
    (by_hand / ".dockerignore").write_text("\n".join(DEFAULT_EXCLUDES) + "\n" + user_rules)
    dockerfile = tmp_path / "Dockerfile.byhand"
    dockerfile.write_text(f"FROM {BUSYBOX}\nCOPY . /dst/tree/\n")
    docker("buildx", "build", "--load", "-q", "-t", "fi-test-ctx-byhand:1", "-f", str(dockerfile), str(by_hand))

    theirs = _listing("fi-test-ctx-byhand:1", "/dst/tree")
    mine = _listing(ours, "/dst/tree")

    # The .dockerignore itself differs in size: the default excludes are written into it here.
    def same(rows: list[str]) -> list[str]:
        return [re.sub(r"^(\./\.dockerignore\|regular file\|\d+)\|\d+", r"\1|", row) for row in rows]

    assert same(mine) == same(theirs)
    assert "./link|symbolic link|777|6|app.py" in mine
    assert "./empty|directory|755||" in mine
    assert "./run.sh|regular file|755|19|" in mine
    assert not [row for row in mine if row.startswith(("./drop.log", "./secret", "./__pycache__", "./nested/a/skip"))]
