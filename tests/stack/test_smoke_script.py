"""scripts/workflows/version-upgrade-smoke.py against the live stack, as CI runs it after a
deployment: a subprocess with only a URL, a login and the plan's DAG and confs. The sandbox
serves the bad-version scenario, so 2.4.0 is the happy path and 2.5.0 the failure path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from powerx_dev.devstack import AirflowStack
from tests.conftest import ROOT
from tests.signing import TEST_PRIVATE_KEY
from tests.stack.conftest import ARTIFACT, AUTO_DAG, FIGURES, RUN_TIMEOUT, versions

pytestmark = pytest.mark.stack

SCRIPT = ROOT / "scripts" / "workflows" / "version-upgrade-smoke.py"
CHECKS = (
    ("happy", f"DAG {AUTO_DAG} exists"),
    ("happy", "run ends success"),
    ("happy", "outcome is promoted"),
    ("happy", "report written"),
    ("happy", "tenants upgraded to 2.4.0"),
    ("failure", "run ends failed"),
    ("failure", "outcome is rolled_back"),
    ("failure", "rollback verified"),
    ("failure", "every tenant back on its old version"),
)


def test_smoke_script_passes_the_happy_and_the_failure_path_on_a_live_stack(
    stack: AirflowStack, sandbox: httpx.Client, sandbox_url: str
):
    username, password = stack.login
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "POWERX_SMOKE"))}
    env["COLUMNS"] = "240"  # one table row per line in the captured output
    argv = [
        sys.executable, str(SCRIPT),
        "--airflow-url", stack.base_url, "--username", username, "--password", password,
        "--happy-dag", AUTO_DAG,
        "--happy-conf", json.dumps({"target_version": "2.4.0", **ARTIFACT}),
        "--failure-conf", json.dumps({"target_version": "2.5.0", **ARTIFACT}),
        "--signing-key", str(TEST_PRIVATE_KEY),  # signs each run as a release pipeline does
        "--platform-url", sandbox_url,
        "--run-timeout", str(RUN_TIMEOUT), "--poll-interval", "1",
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=2 * RUN_TIMEOUT + 120, check=False
    )
    FIGURES["smoke script: happy + failure path (s)"] = time.monotonic() - started
    output = done.stdout + done.stderr

    assert done.returncode == 0, output
    assert "13/13 checks passed" in output, output
    for path, check in CHECKS:
        row = rf"│ {path}\s+│ {re.escape(check)}\s+│ PASS\s+│"
        assert re.search(row, output), (path, check, output)

    # What the script reported is what happened: its two runs, read back independently.
    triggered = dict(re.findall(r"(happy|failure): triggered \S+ run (\S+)", output))
    assert stack.run_state(AUTO_DAG, triggered["happy"]) == "success"
    assert stack.run_state(AUTO_DAG, triggered["failure"]) == "failed"
    after = versions(sandbox)
    for tenant in after.values():  # 2.4.0 kept after the 2.5.0 rollback; internal untouched
        expected = "2.3.1" if tenant["labels"].get("internal") == "true" else "2.4.0"
        assert tenant["version"] == expected, tenant
