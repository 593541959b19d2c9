"""`powerx sandbox serve|check` and the running_sandbox harness: exit codes, messages, cleanup."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from powerx_dev.cli.sandbox import main
from powerx_dev.sandbox.testing import SandboxStartError, running_sandbox

SCENARIOS = Path(__file__).resolve().parents[2] / "include" / "config" / "scenarios"
BAD = """\
seed: 1
plugin: crm-sync
tenants: {count: 5, version: 2.3.1}
faults:
  - {type: error_rate, value: 0.1}
  - {type: latancy, value: 3}
"""


@pytest.fixture
def bad_scenario(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


@pytest.mark.unit
def test_check_summarises_a_valid_scenario(capsys):
    assert main(["check", "--scenario", str(SCENARIOS / "bad-version.yaml")]) == 0
    out = capsys.readouterr().out
    assert "61 tenants" in out and "label tier: bronze 30, gold 13, silver 18" in out
    assert "'type': 'error_rate'" in out


@pytest.mark.unit
@pytest.mark.parametrize("verb", ["check", "serve"])
def test_an_invalid_scenario_exits_2_with_file_line_and_path(verb, bad_scenario, capsys):
    assert (
        main([verb, "--scenario", str(bad_scenario), "--port", "0"][: 3 if verb == "check" else 5])
        == 2
    )
    err = capsys.readouterr().err
    assert f"{bad_scenario}:6 faults[1].type: unknown fault type 'latancy'" in err


@pytest.mark.unit
def test_serve_on_a_busy_port_exits_1_with_the_reason(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--scenario", str(SCENARIOS / "happy.yaml"), "--port", str(port)])
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.unit
def test_the_powerx_console_entry_reaches_the_sandbox_commands(bad_scenario):
    done = subprocess.run(
        [sys.executable, "-m", "powerx_upgrade.cli.main", "sandbox", "check", "--scenario",
         str(bad_scenario)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "faults[1].type" in done.stderr


@pytest.mark.e2e
def test_running_sandbox_stops_the_server_even_when_the_block_fails():
    with (
        pytest.raises(RuntimeError, match="boom"),
        running_sandbox(SCENARIOS / "happy.yaml") as url,
    ):
        assert httpx.get(f"{url}/health").json()["tenants"] == 61
        raise RuntimeError("boom")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)


@pytest.mark.e2e
def test_running_sandbox_reports_why_a_server_did_not_start(bad_scenario):
    expected = r"exited with code 2(.|\n)*faults\[1\]\.type"
    with pytest.raises(SandboxStartError, match=expected), running_sandbox(bad_scenario):
        pass  # pragma: no cover - never reached


@pytest.mark.e2e
def test_two_sandboxes_of_one_scenario_answer_identically(tmp_path):
    """Metrics are a function of the seed: separate processes agree to the last request."""
    body = {
        "plugin": "crm-sync",
        "start": "2026-03-01T10:00:00Z",
        "end": "2026-03-01T10:30:00Z",
        "metrics": ["requests", "errors", "latency_p95_ms", "samples", "error_rate"],
    }
    answers = []
    for _ in range(2):
        with running_sandbox(SCENARIOS / "happy.yaml") as url:
            answers.append(httpx.post(f"{url}/internal/monitoring/query", json=body).json())
    assert answers[0] == answers[1]
    assert len(answers[0]["tenants"]) == 61
    from powerx_dev.sandbox.metrics import MetricsEngine, TenantSeries
    from powerx_dev.sandbox.scenario import load_scenario

    scenario = load_scenario(SCENARIOS / "happy.yaml")
    local = MetricsEngine(scenario).query(
        [
            TenantSeries(t.id, t.labels, ((float("-inf"), t.version),))
            for t in scenario.build_tenants()
        ],
        1_772_359_200.0,
        1_772_361_000.0,
        2_000_000_000.0,
        [],
        body["metrics"],
    )
    assert answers[0]["tenants"] == local
