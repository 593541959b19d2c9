"""The launcher itself: the environment it gives the components, the sweep that leaves no
process behind, and a stack that cannot start (it says why and stops what it started)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from powerx_dev import devstack
from powerx_dev.devstack import (
    MARKER,
    StackSettings,
    marked_processes,
    running_airflow,
    stack_environment,
    sweep,
)
from powerx_dev.ports import PortBusy
from tests.conftest import ROOT

linux_only = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")


def settings(tmp_path: Path) -> StackSettings:
    return StackSettings(tmp_path, "127.0.0.1", 18080, "admin", "pw", "stack-test-id")


@pytest.mark.unit
def test_the_environment_drops_the_callers_airflow_settings_and_lets_env_win(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("AIRFLOW_HOME", "/somewhere/else")
    env = stack_environment(
        settings(tmp_path),
        dags_folder=ROOT / "dags",
        env={"AIRFLOW__CORE__PARALLELISM": "3", "AIRFLOW_CONN_POWERX_PLATFORM": "http://x"},
    )
    assert env["AIRFLOW_HOME"] == str(tmp_path)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "3"  # the caller's env wins
    assert env["AIRFLOW_CONN_POWERX_PLATFORM"] == "http://x"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__API__PORT"] == "18080"
    assert env[MARKER] == "stack-test-id"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(devstack.airflow_executable()).parent)
    # One JWT secret per home, the same for every component and every start.
    again = stack_environment(settings(tmp_path), dags_folder=ROOT / "dags")
    assert again["AIRFLOW__API_AUTH__JWT_SECRET"] == env["AIRFLOW__API_AUTH__JWT_SECRET"]


@pytest.mark.unit
@linux_only
def test_the_sweep_kills_a_marked_process_that_left_its_process_group():
    stack_id = f"sweep-{os.getpid()}-{time.monotonic_ns()}"
    straggler = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, MARKER: stack_id},
        start_new_session=True,  # like a task supervisor in a session of its own
    )
    try:
        deadline = time.monotonic() + 10
        while straggler.pid not in marked_processes(stack_id):
            assert time.monotonic() < deadline, "the marked process never showed up"
            time.sleep(0.05)
        assert sweep(stack_id) == [straggler.pid]
        assert straggler.wait(timeout=5) == -9
        assert marked_processes(stack_id) == []
    finally:
        if straggler.poll() is None:
            straggler.kill()


@pytest.mark.stack
@linux_only
def test_a_stack_that_cannot_start_says_why_and_leaves_no_process(tmp_path):
    (tmp_path / "dags").mkdir()
    with socket.socket() as taken:  # somebody else already listens on the api-server's port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            # the launcher checks its ports before it starts anything: the busy one is named
            pytest.raises(PortBusy, match=f"port {port} on 127.0.0.1") as raised,
            running_airflow(
                tmp_path / "home",
                dags_folder=tmp_path / "dags",
                api_port=port,
                components=("api-server", "triggerer"),
                startup_timeout=120,
            ),
        ):
            pytest.fail("the stack should not have started")
    assert "api_port 0" in str(raised.value)
    assert _pids_with_home(tmp_path / "home") == []


def _pids_with_home(home: Path) -> list[int]:
    needle = f"AIRFLOW_HOME={home.resolve()}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.unit
def test_the_launcher_does_not_import_airflow():
    """It drives Airflow as subprocesses: the caller's process keeps its own Airflow (or none)."""
    code = "import sys, powerx_dev.devstack; print('airflow' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"
