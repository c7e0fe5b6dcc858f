"""`flyte-images completion bash|zsh`: a shell completion script, generated from the parser.

shtab writes the script from the same argparse parser that reads the command line, so it holds
the commands, their options and the options' fixed choices of this version and cannot drift
from them; other words complete as file names. Nothing runs Python while completing.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_command

_HELP = """\
Print a completion script for bash or zsh: commands, options and their fixed choices; file
names for targets and files. Load it in the shell's start-up file.

examples:
  source <(flyte-images completion bash)                 # in ~/.bashrc
  flyte-images completion bash > ~/.local/share/bash-completion/completions/flyte-images
  eval "$(flyte-images completion zsh)"                  # in ~/.zshrc, after compinit
  flyte-images completion zsh > "${fpath[1]}/_flyte-images"
"""


def register(commands: Any) -> None:
    parser = add_command(commands, "completion", "print a shell completion script (bash, zsh)", _HELP)
    parser.add_argument("shell", choices=("bash", "zsh"))
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import shtab  # here: only this command needs it

    from . import build_parser

    parser = build_parser()
    parser.prog = "flyte-images"  # the program's name, however this process was started
    print(shtab.complete(parser, shell=args.shell))
    return 0
