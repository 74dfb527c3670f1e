"""The docs match the program: every command is in the README and has --help."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from outspool.cli import cli
from outspool.settings import Settings
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


PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCK.findall(README.read_text()))))
def test_readme_python_examples_run(index: int, tmp_path: Path) -> None:
    """Each Python example in the README runs as pasted, in an empty folder."""
    code = PYTHON_BLOCK.findall(README.read_text())[index]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr.decode()


def test_every_setting_is_in_the_configuration_reference() -> None:
    reference = (README.parent / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.__struct_fields__ if f"`{name}`" not in reference]
    assert missing == []
