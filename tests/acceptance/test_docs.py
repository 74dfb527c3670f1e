"""The docs match the program: every command is in the README and has --help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from outspool.cli import cli
from tests.conftest import RunCli

README = Path(__file__).parents[2] / "README.md"
COMMANDS = sorted(cli.commands)


def test_there_are_commands() -> None:
    assert {"run", "logs", "show", "ls"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_has_help(run_cli: RunCli, command: str) -> None:
    result = run_cli(command, "--help")
    assert result.rc == 0
    text = result.stdout.decode()
    assert text.startswith(f"Usage: outspool {command}")
    assert cli.commands[command].help, f"{command} has no docstring"


@pytest.mark.parametrize("command", COMMANDS)
def test_command_is_in_the_readme(command: str) -> None:
    assert re.search(rf"\boutspool {command}\b", README.read_text()), (
        f"README.md never shows `outspool {command}`"
    )
