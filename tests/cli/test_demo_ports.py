"""`powerx demo` refuses a busy port before it starts anything (issue 15: with another Airflow
on 8080 it started its own stack, then followed a run on the other Airflow)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.unit


@pytest.fixture
def occupied() -> Iterator[int]:
    """A port some other process listens on (here: this test, with a plain socket)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def demo(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "powerx"), "demo", "--once", "--home", str(home), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("option", "what"), [("--api-port", "the Airflow UI/API"), ("--sandbox-port", "the sandbox")]
)
def test_a_busy_port_is_named_with_how_to_choose_another_and_nothing_starts(
    tmp_path, occupied, option, what
):
    home = tmp_path / "demo"
    done = demo(home, option, str(occupied))
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, output
    assert f"port {occupied} on 127.0.0.1 ({what}" in output
    assert f"{option} 0 for any free port" in output
    assert "Nothing was started" in output
    # nothing was started: no Airflow home, no sandbox log, no ledger, no stack state
    assert not (home / "airflow").exists()
    assert not (home / "powerx_ledger.db").exists()
    assert "starting the sandbox" not in output


def test_the_stack_launcher_itself_refuses_a_busy_api_port(tmp_path, occupied):
    from powerx_dev.devstack import running_airflow
    from powerx_dev.ports import PortBusy

    with (
        pytest.raises(PortBusy, match=f"port {occupied} "),
        running_airflow(tmp_path / "airflow", dags_folder=tmp_path, api_port=occupied),
    ):
        pass
    assert not (tmp_path / "airflow").exists()
