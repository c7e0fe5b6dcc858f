"""`flyte-images completion bash|zsh`: the scripts complete in real shells. Nothing but the
script is loaded there: the program is not on PATH, so a stray Enter runs nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flyte_images._cli import main

BASH_CASES = {
    ("",): "id dockerfile build exists explain cache doctor completion",
    ("ca",): "cache",
    ("cache", ""): "prune",
    ("cache", "prune", "--o"): "--older-than",
    ("build", "x.py", "--cache", ""): "registry none",
    ("completion", ""): "bash zsh",
    ("doctor", "--registry", "r", "--j"): "--json",
}


def _script(shell: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["completion", shell]) == 0
    path = tmp_path / f"flyte-images.{shell}"
    path.write_text(capsys.readouterr().out)
    return path


def test_bash_completes_commands_options_and_choices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script("bash", tmp_path, capsys)
    lines = [f"source {script}"]
    for words in BASH_CASES:
        quoted = " ".join(f"'{w}'" for w in ("flyte-images", *words))
        lines.append(f'COMP_WORDS=({quoted}); COMP_CWORD={len(words)}; _shtab_flyte_images; echo "${{COMPREPLY[*]}}"')
    lines.append("complete -p flyte-images")
    done = subprocess.run(["bash", "--norc", "-c", "\n".join(lines)], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    *answers, registered = done.stdout.splitlines()
    assert answers == list(BASH_CASES.values())
    assert registered == "complete -o bashdefault -F _shtab_flyte_images flyte-images"


ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z 'PS1="> "; autoload -U compinit; compinit -u -D; eval "$(<SCRIPT)"'
# A key that prints the command line between markers (built from parts, so the echo of this
# very line never matches them) and clears it: nothing is ever run.
zpty -w z 'm=QZ; show() { print -r -- "${m}X$BUFFER${m}Y"; BUFFER=""; }; zle -N show; bindkey "^T" show'
ask() { zpty -n -w z "$1"$'\x14'; zpty -r -m z out '*QZY*'; print -r -- "${${out##*QZX}%%QZY*}"; }
ask $'flyte-images ca\t'
ask $'flyte-images cache prune --ol\t'
ask $'flyte-images build x.py --cache r\t'
ask $'flyte-images completion z\t'
zpty -d z
"""


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (apt-get install zsh)")
def test_zsh_completes_commands_options_and_choices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _script("zsh", tmp_path, capsys)
    subprocess.run(["zsh", "-n", str(script)], check=True)
    driver = tmp_path / "driver.zsh"
    driver.write_text(ZSH_DRIVER.replace("SCRIPT", str(script)))
    done = subprocess.run(["zsh", "-f", str(driver)], check=False, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})  # fmt: skip
    assert [line.rstrip() for line in done.stdout.splitlines()] == [
        "flyte-images cache",
        "flyte-images cache prune --older-than",
        "flyte-images build x.py --cache registry",
        "flyte-images completion zsh",
    ], done.stdout + done.stderr


def test_completion_needs_a_known_shell(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["completion", "fish"])
    assert exit_.value.code == 2
    assert "'fish'" in capsys.readouterr().err


def test_help_lists_the_new_commands_without_loading_their_work() -> None:
    """`--help` registers every command, but what the new ones run with (the inventory, the
    registry client, sockets, dataclasses) is imported only when they run."""
    code = (
        "import sys\nfrom flyte_images._cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('flyte_images._files.inventory', 'flyte_images._registry', 'dataclasses', 'ssl', 'socket', 'json')\n"
        "print(sorted(m for m in sys.modules if m in heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    *help_text, loaded = done.stdout.strip().splitlines()
    assert loaded == "[]"
    listed = "\n".join(help_text)
    assert all(f"    {name}" in listed for name in ("cache", "doctor", "completion"))
