"""The README's command lines name commands and options that exist.

Every ``confide ...`` line of the README's shell blocks (continuation lines
joined) is walked down the CLI's command tree; each ``--option`` it uses must
be an option of the command it reaches. Placeholders (``APP_ID``, file names)
are not run: this catches documentation that drifted from the CLI, not the
behaviour of the commands, which their own tests cover.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from confide.cli import app

README = Path(__file__).resolve().parents[3] / "README.md"


def _shell_blocks(text: str) -> list[str]:
    """The text of each fenced block that is shell (```sh) or untyped (```)."""
    blocks: list[str] = []
    current: list[str] | None = None
    shell = False
    for line in text.splitlines():
        if line.startswith("```"):
            if current is None:
                current, shell = [], line[3:].strip() in ("", "sh")
            else:
                if shell:
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _command_lines() -> list[str]:
    lines: list[str] = []
    for block in _shell_blocks(README.read_text(encoding="utf-8")):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            for part in line.split(";"):  # `confide list; confide status APP_ID`
                for command in part.split("&&"):
                    words = command.split("#", 1)[0].strip()
                    if words.startswith("confide "):
                        lines.append(words)
    return lines


COMMANDS = _command_lines()


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_exists_with_its_options(line: str) -> None:
    words = shlex.split(re.sub(r"[()|\[\]]", " ", line))
    command: Any = typer.main.get_command(app)
    path = ["confide"]
    rest = words[1:]
    while hasattr(command, "commands") and rest and rest[0] in command.commands:
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    assert not hasattr(command, "commands"), f"{' '.join(path)} needs a subcommand: {line}"
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    used = {word.split("=", 1)[0] for word in rest if word.startswith("--")}
    unknown = sorted(used - known - {"--help"})
    assert not unknown, f"{' '.join(path)} has no option {', '.join(unknown)} (README: {line})"
