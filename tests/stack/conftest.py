"""One live Airflow stack (api-server, scheduler, dag-processor, triggerer) and one sandbox for
every stack test of the session: started once, stopped (with every process they started) at the
end, also when a test fails or the session is interrupted."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from powerx_dev.devstack import AirflowStack, marked_processes, running_airflow
from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from tests.conftest import CONFIG_DIR, ROOT
from tests.signing import SIGNING_KEYS, sign

STACK_CONFIG = ROOT / "tests" / "fixtures" / "stack_config"
SCENARIO = CONFIG_DIR / "scenarios" / "bad-version.yaml"
PLUGIN = "crm-sync"
AUTO_DAG = "plugin_upgrade__crm-sync-stack"
PAUSE_DAG = "plugin_upgrade__crm-sync-stack-pause"
APPROVAL_DAG = "plugin_upgrade__crm-sync-stack-approval"
UNANSWERED_DAG = "plugin_upgrade__crm-sync-stack-unanswered"
FAULTS_PLATFORM_DAG = "plugin_upgrade__crm-sync-faults-platform"
FAULTS_SIGNAL_DAG = "plugin_upgrade__crm-sync-faults-signal"
DAG_IDS = (
    AUTO_DAG,
    PAUSE_DAG,
    APPROVAL_DAG,
    UNANSWERED_DAG,
    FAULTS_PLATFORM_DAG,
    FAULTS_SIGNAL_DAG,
)
ARTIFACT = {
    "artifact_uri": "s3://releases/crm-sync-ci.tgz",
    "artifact_sha256": "c" * 64,
}
"""The CI build of the stack tests' runs: unsigned; `artifact_for(version)` adds the signature
every run that is not a dry run needs (preflight refuses an unsigned artifact)."""


def artifact_for(version: str) -> dict[str, str]:
    """ARTIFACT signed with the TEST-ONLY key for crm-sync `version` (for a run's conf)."""
    return {**ARTIFACT, "artifact_signature": sign(version, ARTIFACT["artifact_sha256"], PLUGIN)}


RUN_TIMEOUT = 240

APPROVAL_SECRET = "stack-tests-approval-secret-TEST-ONLY-0123456789"
"""The shared secret of the stack's `powerx_approval` connection (approval tokens, TEST-ONLY)."""
VIEWER = "viewer"
"""A second Airflow user with the viewer role (read-only); Airflow generates its password into
the home's passwords file (`viewer_password`)."""

FIGURES: dict[str, float] = {}
"""Measured figures of the session (seconds), printed in the terminal summary."""


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    with running_sandbox(SCENARIO) as url:
        yield url


@pytest.fixture(scope="session")
def ledger_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('stack-ledger') / 'ledger.db'}"


@pytest.fixture(scope="session")
def stack_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stack's config: a copy of STACK_CONFIG, since POST /plan writes into its plans/."""
    config = tmp_path_factory.mktemp("stack-config")
    shutil.copytree(STACK_CONFIG, config, dirs_exist_ok=True)
    return config


@pytest.fixture(scope="session")
def stack(
    sandbox_url: str,
    ledger_url: str,
    stack_config: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AirflowStack]:
    env = {f"AIRFLOW_CONN_POWERX_{name}": sandbox_url for name in _SYSTEMS}
    env["AIRFLOW_CONN_POWERX_LEDGER"] = json.dumps(
        {"conn_type": "generic", "extra": {"url": ledger_url}}
    )
    env["POWERX_UPGRADE_CONFIG"] = str(stack_config)
    env["AIRFLOW_CONN_POWERX_APPROVAL"] = json.dumps(
        {"conn_type": "generic", "password": APPROVAL_SECRET}
    )
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = f"admin:admin,{VIEWER}:viewer"
    env["POWERX_UPGRADE_SIGNING_KEYS"] = str(SIGNING_KEYS)  # the TEST-ONLY public key
    home = tmp_path_factory.mktemp("airflow-stack")
    started = time.monotonic()
    with running_airflow(home, dags_folder=ROOT / "dags", env=env, dag_ids=DAG_IDS) as live:
        FIGURES["stack: migrate (s)"] = live.timings["migrate"]
        FIGURES["stack: start to healthy (s)"] = live.timings["start"]
        FIGURES["stack: start to DAGs parsed (s)"] = time.monotonic() - started
        yield live
        stopping = time.monotonic()
    FIGURES["stack: stop (s)"] = time.monotonic() - stopping
    # Nothing the stack started outlives it (task supervisors included).
    assert marked_processes(live.settings.stack_id) == []


_SYSTEMS = ("PLATFORM", "MONITORING", "NOTIFY", "AUDIT")


@pytest.fixture
def sandbox(sandbox_url: str) -> Iterator[httpx.Client]:
    """The sandbox, back to its scenario's initial fleet (each test starts from 2.3.1)."""
    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        client.post("/sandbox/reset").raise_for_status()
        yield client


@pytest.fixture(scope="session")
def ledger(ledger_url: str, stack: AirflowStack) -> Ledger:
    return Ledger(ledger_url)


def viewer_password(stack: AirflowStack) -> str:
    """The viewer's password, as the api-server generated it into the passwords file."""
    passwords = json.loads((stack.home / "simple_auth_manager_passwords.json").read_text())
    return str(passwords[VIEWER])


def versions(client: httpx.Client) -> dict[str, dict[str, Any]]:
    """Every tenant of the plugin as the sandbox sees it: version, config_version, labels."""
    tenants = client.get("/sandbox/tenants", params={"plugin": PLUGIN}).json()["tenants"]
    return {t["id"]: t for t in tenants}


@dataclass
class Timeline:
    """What a test saw of a run while it was going: every task state change, when."""

    started: float = field(default_factory=time.monotonic)
    seen: dict[str, str | None] = field(default_factory=dict)
    events: list[tuple[float, str, str | None]] = field(default_factory=list)

    def observe(self, states: dict[str, str | None]) -> list[tuple[str, str | None]]:
        changed = [(k, v) for k, v in states.items() if self.seen.get(k, "?") != v]
        now = time.monotonic() - self.started
        for task, state in changed:
            self.seen[task] = state
            self.events.append((now, task, state))
        return changed

    def first(self, task_prefix: str, state: str) -> float | None:
        """Seconds from the trigger until a task (any map index) was first seen in `state`."""
        return next(
            (t for t, task, s in self.events if task.startswith(task_prefix) and s == state),
            None,
        )


def explain(stack: AirflowStack, dag_id: str, run_id: str) -> str:
    """The run's task states plus the logs of its failed tasks: the message of a failed assert."""
    parts = [stack.describe_run(dag_id, run_id)]
    for ti in stack.task_instances(dag_id, run_id):
        if ti["state"] == "failed":
            parts.append(
                f"=== {ti['task_id']}[{ti['map_index']}] ===\n"
                + stack.task_log(dag_id, run_id, ti["task_id"], map_index=ti["map_index"])
            )
    return "\n".join(parts)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.write_sep("-", "live stack figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value:.1f}")


@pytest.fixture(scope="session")
def powerx(stack: AirflowStack) -> Any:
    """Run `powerx plugin ...` as a real subprocess with the connection in the environment."""
    import subprocess

    from tests.stack.runs import Cli, cli_command, cli_env

    env = cli_env(stack)

    def run(*args: str, timeout: float = 60) -> Cli:
        done = subprocess.run(
            cli_command(*args), env=env, capture_output=True, text=True, timeout=timeout
        )
        return Cli(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture(scope="session")
def case_a(stack: AirflowStack, sandbox_url: str) -> Any:
    """Case A once for the session, as CI runs it: `powerx plugin upgrade --wait` of 2.4.0
    (healthy on every selected tenant), followed through the REST API."""
    import uuid

    from tests.stack.runs import follow_upgrade

    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        client.post("/sandbox/reset").raise_for_status()
        run = follow_upgrade(stack, client, "2.4.0", f"cli-a-{uuid.uuid4().hex[:8]}")
    FIGURES["case A (powerx plugin upgrade --wait): start to run end (s)"] = run.seconds
    first_deploy = run.timeline.first("batch_1.deploy", "running")
    if first_deploy is not None:
        FIGURES["case A: CLI start to first batch deploy running (s)"] = first_deploy
    return run


@pytest.fixture(scope="session")
def case_b(stack: AirflowStack, sandbox_url: str) -> Any:
    """Case B once for the session: `powerx plugin upgrade --wait` of 2.5.0, whose bronze
    batch fails its gate (9 % errors): every upgraded tenant rolls back, the CLI exits 1."""
    import uuid

    from tests.stack.runs import follow_upgrade

    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        client.post("/sandbox/reset").raise_for_status()
        run = follow_upgrade(stack, client, "2.5.0", f"cli-b-{uuid.uuid4().hex[:8]}")
    FIGURES["case B (powerx plugin upgrade --wait): start to run end (s)"] = run.seconds
    return run
