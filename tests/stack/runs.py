"""Case A and case B on the live stack, run once per session the way a CI pipeline runs them:
`powerx plugin upgrade ... --wait` in a real subprocess, while the test follows the same run
through the REST API and keeps evidence (task states over time, deferred gates, pools,
triggerers). tests/stack/test_rollout_stack.py asserts the rollout, tests/stack/test_cli_stack.py
the CLI's exit codes and output: one pair of DAG runs serves both."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from powerx_dev.devstack import AirflowStack
from tests.stack.conftest import (
    AUTO_DAG,
    RUN_TIMEOUT,
    Timeline,
    artifact_for,
    explain,
    versions,
)

PLAN = AUTO_DAG.removeprefix("plugin_upgrade__")


@dataclass
class Cli:
    """One `powerx plugin` process: its exit code and output."""

    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"


Powerx = Callable[..., Cli]


def cli_env(stack: AirflowStack) -> dict[str, str]:
    """The connection in the environment, the way a CI job configures it."""
    username, password = stack.login
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "POWERX_"))},
        "POWERX_AIRFLOW_URL": stack.base_url,
        "POWERX_AIRFLOW_USERNAME": username,
        "POWERX_AIRFLOW_PASSWORD": password,
        "COLUMNS": "200",
    }


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "powerx_upgrade.cli.main", "plugin", *args]


def upgrade_args(version: str, run_id: str, timeout: float = RUN_TIMEOUT) -> list[str]:
    artifact = artifact_for(version)  # signed with the TEST-ONLY key the stack trusts
    return [
        "upgrade",
        "--plan",
        PLAN,
        "--strategy",
        "policy",
        "--version",
        version,
        "--artifact",
        artifact["artifact_uri"],
        "--sha256",
        artifact["artifact_sha256"],
        "--signature",
        artifact["artifact_signature"],
        "--reason",
        f"CI: roll out {version}",
        "--run-id",
        run_id,
        "--wait",
        "--timeout",
        f"{timeout:g}s",
        "--poll",
        "1",
    ]


@dataclass
class FollowedRun:
    run_id: str
    state: str
    before: dict[str, dict[str, Any]]
    after: dict[str, dict[str, Any]]
    timeline: Timeline
    deferred_gates: list[dict[str, Any]]
    """The gate's task instance (REST) each time a batch's gate was first seen deferred."""
    pools: list[dict[str, Any]]
    """`default_pool` at those moments."""
    triggerers: list[list[int]]
    """The ids of the running triggerer jobs at those moments."""
    cli: Cli
    """What `powerx plugin upgrade --wait` printed and exited with."""
    seconds: float
    """From starting the CLI to the run's end."""


def follow_upgrade(
    stack: AirflowStack,
    sandbox: httpx.Client,
    version: str,
    run_id: str,
    timeout: float = RUN_TIMEOUT,
) -> FollowedRun:
    """Start `powerx plugin upgrade --wait` for the stack plan, watch the run to its end through
    the REST API (keeping evidence of every deferred gate), then collect the CLI's exit.
    `timeout`: seconds for the run (the CLI's `--timeout` and this watch)."""
    before = versions(sandbox)
    timeline = Timeline()
    process = subprocess.Popen(
        cli_command(*upgrade_args(version, run_id, timeout)),
        env=cli_env(stack),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    gates: list[dict[str, Any]] = []
    pools: list[dict[str, Any]] = []
    triggerers: list[list[int]] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            stack.check_alive()
            state = _state_once_triggered(stack, run_id, process)
            if state is not None:
                for task, task_state in timeline.observe(stack.task_states(AUTO_DAG, run_id)):
                    if task.endswith(".gate") and task_state == "deferred":
                        gates.append(_picked_up(stack, run_id, task))
                        pools.append(stack.pool())
                        triggerers.append(_running_triggerers(stack))
                if state in ("success", "failed"):
                    break
            assert time.monotonic() < deadline, explain(stack, AUTO_DAG, run_id)
            time.sleep(0.5)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    seconds = time.monotonic() - timeline.started
    cli = Cli(process.returncode, out, err)
    print(cli)  # what a CI log shows (pytest -rP)
    return FollowedRun(
        run_id, state, before, versions(sandbox), timeline, gates, pools, triggerers, cli, seconds
    )


def _state_once_triggered(
    stack: AirflowStack, run_id: str, process: subprocess.Popen[str]
) -> str | None:
    """The run's state, or None until the CLI has triggered it (it fails the test if the CLI
    ends without a run)."""
    try:
        return stack.run_state(AUTO_DAG, run_id)
    except Exception:
        if process.poll() is not None:
            out, err = process.communicate()
            ended = Cli(process.returncode, out, err)
            raise AssertionError(f"the CLI ended without a run:\n{ended}") from None
        return None


def _picked_up(stack: AirflowStack, run_id: str, task_id: str) -> dict[str, Any]:
    """The deferred gate's task instance once a triggerer has taken its trigger (a second or
    so after the deferral), or as it is when it stops being deferred first."""
    for _ in range(20):
        ti = stack.task_instance(AUTO_DAG, run_id, task_id)
        if ti["state"] != "deferred" or ti.get("triggerer_job"):
            return ti
        time.sleep(0.25)
    return ti


def _running_triggerers(stack: AirflowStack) -> list[int]:
    jobs = stack.get("/api/v2/jobs", job_type="TriggererJob", job_state="running")["jobs"]
    return [j["id"] for j in jobs]
