"""`powerx demo` and `powerx sandbox` come from the dev package (packages/powerx-dev) through the
`powerx.commands` entry-point group; without it they say that they need it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from powerx_upgrade.cli import main as cli_main
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.unit


def test_the_dev_package_registers_demo_and_sandbox():
    names = [entry.name for entry in cli_main.command_entry_points()]
    assert names[:2] == ["sandbox", "demo"]
    args = cli_main.build_parser().parse_args(
        ["sandbox", "check", "--scenario", str(CONFIG_DIR / "scenarios" / "happy.yaml")]
    )
    assert args.func.__module__ == "powerx_dev.cli.sandbox"
    args = cli_main.build_parser().parse_args(["demo", "--once", "--scenario", "happy"])
    assert args.func.__module__ == "powerx_dev.cli.demo"
    assert args.once and args.scenario == "happy"


def test_sandbox_check_runs_through_the_runtime_cli(capsys):
    code = cli_main.main(
        ["sandbox", "check", "--scenario", str(CONFIG_DIR / "scenarios" / "happy.yaml")]
    )
    assert code == 0
    assert capsys.readouterr().out.startswith("ok: ")


@pytest.mark.parametrize(
    "argv", [["demo"], ["demo", "--once", "--scenario", "happy"], ["sandbox", "serve", "-x"]]
)
def test_without_the_dev_package_the_dev_commands_say_they_need_it(monkeypatch, capsys, argv):
    monkeypatch.setattr(cli_main, "command_entry_points", lambda: [])
    assert cli_main.main(argv) == cli_main.EXIT_NEEDS_DEV_PACKAGE
    err = capsys.readouterr().err
    assert f"powerx {argv[0]}: this command comes from the powerx-dev package" in err
    assert "not installed" in err
    # ... and the runtime commands still work.
    args = cli_main.build_parser().parse_args(["plan", "validate"])
    assert args.noun == "plan"


def test_the_runtime_cli_does_not_import_the_dev_package():
    """Only the entry points load it, when the parser is built: importing the CLI (or any
    runtime module) never does."""
    code = (
        "import sys, powerx_upgrade.cli.main, powerx_upgrade.cli.plugin\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'powerx_dev'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
