"""Issue 15: exit codes CI can tell apart. 0 valid, 1 invalid config, 2 usage, 70 an internal
error as one line without a traceback (`--debug` / POWERX_DEBUG=1 shows it)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from powerx_upgrade.cli import plan as plan_cmd
from powerx_upgrade.cli.main import EXIT_INTERNAL, main
from tests.conftest import EXAMPLE_POLICIES
from tests.hostile import HOSTILE_FILES

pytestmark = pytest.mark.unit


@pytest.fixture
def config_with(tmp_path):
    """A config dir: the example policies plus one file under plans/."""

    def _make(name: str, content: bytes):
        (tmp_path / "plans").mkdir(exist_ok=True)
        shutil.copy(EXAMPLE_POLICIES, tmp_path / "upgrade_policies.yaml")
        path = tmp_path / "plans" / f"{name}.yaml"
        path.write_bytes(content)
        return path

    return _make


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_every_hostile_file_exits_1_with_its_location(capsys, config_with, name):
    path = config_with(name, HOSTILE_FILES[name])
    code = main(["plan", "validate", str(path.parent.parent)])
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    assert f"plans/{name}.yaml" in out
    assert "error" in out


def test_the_issue_reproduction_through_the_console_script(config_with):
    path = config_with("zz", b"version: 1\nx-a: &a [*a]\n")
    done = subprocess.run(
        [sys.executable, "-m", "powerx_upgrade.cli.main", "plan", "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "zz.yaml:2: error: an alias refers to a node that contains it (recursive)" in done.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "validate", "/no/such/config"],
        ["plan", "frobnicate"],
        ["plan", "validate", "--format", "xml"],
        ["plan", "schema", "--output", "/no/such/dir/schema.json"],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    assert code == 2
    assert "Traceback" not in capsys.readouterr().err


def _boom(*args, **kwargs):
    raise RuntimeError("an internal bug\nsecond line of the message")


def test_an_internal_error_is_one_line_and_exit_70(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("POWERX_DEBUG", raising=False)
    monkeypatch.setattr(plan_cmd, "load_config", _boom)
    code = main(["plan", "validate", str(EXAMPLE_POLICIES)])
    err = capsys.readouterr().err
    assert code == EXIT_INTERNAL == 70
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "internal error: RuntimeError: an internal bug second line of the message" in err


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(plan_cmd, "load_config", _boom)
    with pytest.raises(RuntimeError, match="an internal bug"):
        main(["--debug", "plan", "validate", str(EXAMPLE_POLICIES)])
    monkeypatch.setenv("POWERX_DEBUG", "1")
    with pytest.raises(RuntimeError, match="an internal bug"):
        main(["plan", "validate", str(EXAMPLE_POLICIES)])


def test_an_internal_error_in_a_real_process_exits_70_without_traceback():
    script = (
        "import sys\n"
        "from powerx_upgrade.cli import plan, main\n"
        "def boom(*a, **k): raise KeyError('no such thing')\n"
        "plan.load_config = boom\n"
        f"sys.exit(main.main(['plan', 'validate', {str(EXAMPLE_POLICIES)!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 70
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
