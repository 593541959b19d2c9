"""Run whole DAGs the way an operator does: `airflow dags test` in a subprocess, against a
migrated AIRFLOW_HOME, with the PowerX connections pointing at a sandbox over HTTP and the
ledger in a real SQLite file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT
from tests.signing import SIGNING_KEYS

E2E_CONFIG = ROOT / "tests" / "fixtures" / "e2e_config"
E2E_SHA256 = "a" * 64
"""The e2e plans' default artifact digest (signed for 2.4.0 in the plans; tests/signing.py)."""


def airflow_bin() -> str:
    found = shutil.which("airflow") or str(Path(sys.executable).parent / "airflow")
    assert Path(found).exists(), "airflow is not installed in this environment"
    return found


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "POWERX_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        POWERX_UPGRADE_CONFIG=str(E2E_CONFIG),
        # The TEST-ONLY public key: preflight verifies every artifact signature against it.
        POWERX_UPGRADE_SIGNING_KEYS=str(SIGNING_KEYS),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def migrate(home: Path) -> None:
    done = subprocess.run(
        [airflow_bin(), "db", "migrate"],
        env=base_env(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@dataclass
class DagTestRun:
    returncode: int
    output: str
    ledger_url: str

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def dags_test(
    home: Path,
    dag_id: str,
    *,
    sandbox_url: str,
    ledger_file: Path,
    conf: dict | None = None,
    config: Path = E2E_CONFIG,
    timeout: float = 600,
    extra_env: dict[str, str] | None = None,
    ledger_conn: str | None = None,
) -> DagTestRun:
    """`airflow dags test DAG_ID -c CONF` with the connections set through the environment
    (`ledger_conn`: the `powerx_ledger` definition as given, instead of the file's URL)."""
    env = base_env(home)
    env["POWERX_UPGRADE_CONFIG"] = str(config)
    for name in ("PLATFORM", "MONITORING", "NOTIFY", "AUDIT"):
        env[f"AIRFLOW_CONN_POWERX_{name}"] = sandbox_url
    ledger_url = f"sqlite:///{ledger_file}"
    env.update(extra_env or {})
    env["AIRFLOW_CONN_POWERX_LEDGER"] = ledger_conn or json.dumps(
        {"conn_type": "generic", "extra": {"url": ledger_url}}
    )
    done = subprocess.run(
        [airflow_bin(), "dags", "test", dag_id, "-c", json.dumps(conf or {})],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = done.stdout + done.stderr
    # Kept beside the ledger: pytest keeps the last sessions' tmp dirs for a post-mortem.
    (ledger_file.parent / f"dags-test-{dag_id}.log").write_text(output)
    return DagTestRun(done.returncode, output, ledger_url)
