"""The README's two commands and CI stay in step."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Set-up: two commands.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md lost its set-up block"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_setup_is_exactly_two_commands():
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert "powerx" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()
