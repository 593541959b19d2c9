"""`powerx demo --once`: the README's main job, run for real, to its end, leaving nothing behind."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from powerx_upgrade.ledger import Ledger
from tests.conftest import ROOT

pytestmark = pytest.mark.stack


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_once_runs_the_plan_to_the_expected_outcome_and_stops_everything(tmp_path):
    home = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "powerx"),
            "demo",
            "--once",
            "--api-port",
            "0",
            "--home",
            str(home),
            "--scenario",
            "bad-version",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "outcome rolled_back (expected rolled_back)" in output
    reports = re.findall(r"report: (\S+)", output)
    assert {Path(r).name for r in reports} == {
        "report.json",
        "report.md",
        "report.html",
        "postmortem.md",
    }
    assert all(Path(r).is_file() for r in reports)
    assert "time from command to first batch:" in output
    ui = re.search(r"Airflow UI: (http://127\.0\.0\.1:(\d+))", output)
    sandbox = re.search(r"sandbox: http://127\.0\.0\.1:(\d+)", output)
    assert ui and sandbox
    assert not listening(int(ui.group(2))) and not listening(int(sandbox.group(1)))
    book = Ledger(f"sqlite:///{home / 'powerx_ledger.db'}")
    run = book.runs()[-1]
    assert run.outcome == "rolled_back"
    # The demo signs its artifact with a key it made under its home; preflight verified it.
    assert "signing key powerx-demo" in output
    verified = [r for r in book.audit_records(run.run_id) if r.event == "artifact.verified"]
    assert [r.payload["details"]["key_id"] for r in verified] == ["powerx-demo"]
    private = home / "signing" / "powerx-demo.private.pem"
    assert private.stat().st_mode & 0o077 == 0
    # The stack had an approval connection; the summary says how to steer the run from the CLI
    # (the secret is only named by its file, never printed).
    secret = home / "approval.secret"
    assert secret.stat().st_mode & 0o077 == 0
    assert f"powerx plugin rollback --run {run.run_id}" in output
    assert f"POWERX_APPROVAL_SECRET=$(cat {secret})" in output
    assert secret.read_text().strip() not in output
    leftovers = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", f"orphan processes: {leftovers.stdout}"
