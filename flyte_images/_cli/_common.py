"""What every command's parser shares."""

from __future__ import annotations

import argparse
from typing import Any


def add_command(commands: Any, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose --help shows `description` (with its examples) as written."""
    return commands.add_parser(  # type: ignore[no-any-return]
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
