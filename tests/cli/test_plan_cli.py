"""`powerx plan validate|preview|schema`, in process and through the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from powerx_upgrade.cli.main import main
from tests.conftest import CONFIG_DIR, EXAMPLE_POLICIES, EXAMPLE_TENANTS

pytestmark = pytest.mark.unit

THREE_MISTAKES = """
version: 1
policies:
  standard-grey:
    batches:
      - {name: canary, ratio: 0.05, bake: 10m}
      - {ratio: 1.0, bake: 10m}
    gate:
      checks:
        - {metric: error_rate, op: "<=", limit: 0.05}
plans:
  crm-sync:
    plugin: crm-sync
    policy: standrad-grey
  billing:
    plugin: billing
    policy: standard-grey
    rollback: {mode: auto}
  ledger:
    plugin: ledger
    policy: standard-grey
    window: {schedule: "0 2 * * SAT", duration: 4h, timezone: Mars/Olympus}
"""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def powerx() -> str:
    found = shutil.which("powerx") or str(Path(sys.executable).parent / "powerx")
    assert Path(found).exists(), "the powerx console script is not installed"
    return found


def test_validate_example_config_through_the_console_script_exits_0():
    done = subprocess.run(
        [powerx(), "plan", "validate", str(EXAMPLE_POLICIES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 valid plan(s)" in done.stdout and "0 error(s)" in done.stdout


def test_validate_reports_all_three_mistakes_with_file_line_and_path(capsys, write):
    path = write("upgrade_policies.yaml", THREE_MISTAKES)
    code, out, _ = run(capsys, "plan", "validate", str(path))
    assert code == 1
    lines = [line for line in out.splitlines() if ": error: " in line]
    assert len(lines) == 3
    assert f"{path}:13: error: plans.crm-sync.policy: unknown policy 'standrad-grey'" in out
    assert f"{path}:17: error: plans.billing.rollback: unknown field 'rollback'" in out
    assert (
        f"{path}:21: error: plans.ledger.window.timezone: unknown time zone 'Mars/Olympus'" in out
    )


def test_validate_json_gives_problems_as_data(capsys, write):
    path = write("upgrade_policies.yaml", THREE_MISTAKES)
    code, out, _ = run(capsys, "plan", "validate", str(path), "--format", "json")
    document = json.loads(out)
    assert code == 1 and document["errors"] == 3
    assert set(document["invalid_plans"]) == {"crm-sync", "billing", "ledger"}
    first = document["problems"][0]
    assert set(first) == {"file", "line", "severity", "path", "message", "plan_id", "policy_id"}


def test_validate_directory_loads_plans_beside_the_policies(capsys, write):
    policies = write("cfg/upgrade_policies.yaml", THREE_MISTAKES.split("plans:")[0])
    write("cfg/plans/crm.yaml", "plans:\n  crm: {plugin: crm-sync, policy: standard-grey}\n")
    write("cfg/plans/extra.yml", "plans:\n  extra: {plugin: x, policy: standard-grey}\n")
    code, out, _ = run(capsys, "plan", "validate", str(policies.parent))
    assert code == 0 and "3 file(s), 2 valid plan(s)" in out


def test_a_plan_file_is_validated_with_its_sibling_policies(capsys, write):
    write("cfg/upgrade_policies.yaml", THREE_MISTAKES.split("plans:")[0])
    plan_file = write(
        "cfg/plans/crm.yaml", "plans:\n  crm: {plugin: crm-sync, policy: standard-grey}\n"
    )
    code, out, _ = run(capsys, "plan", "validate", str(plan_file))
    assert code == 0 and "1 valid plan(s)" in out


def test_validate_uses_the_environment_override(capsys, write, monkeypatch):
    path = write("elsewhere.yaml", THREE_MISTAKES)
    monkeypatch.setenv("POWERX_UPGRADE_CONFIG", str(path))
    code, out, _ = run(capsys, "plan", "validate")
    assert code == 1 and str(path) in out


def test_validate_missing_path_is_a_usage_error(capsys, tmp_path):
    code, _, err = run(capsys, "plan", "validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "does not exist" in err


def test_preview_json_partitions_exactly_the_selected_tenants_canary_first(capsys):
    code, out, _ = run(
        capsys,
        "plan",
        "preview",
        "crm-sync-standard",
        "--tenants",
        str(EXAMPLE_TENANTS),
        "--format",
        "json",
        "--config",
        str(CONFIG_DIR),
        "--now",
        "2026-11-27T12:00:00+00:00",
    )
    assert code == 0
    document = json.loads(out)
    tenants = json.loads(EXAMPLE_TENANTS.read_text())
    selected = {
        t["id"]
        for t in tenants
        if t["labels"]["tier"] in ("gold", "silver") and t["id"] != "t-0042"
    } | {"t-0001"}
    union = [t for batch in document["batches"] for t in batch["tenants"]]
    assert sorted(union) == sorted(selected) and len(union) == len(set(union))
    assert document["batches"][0]["tenants"][0] == "t-0001"
    assert [b["name"] for b in document["batches"]] == ["canary", "early", "half", "rest"]
    assert document["batches"][-1]["cumulative_ratio"] == 1.0
    assert [b["bake_seconds"] for b in document["batches"]] == [600, 900, 1800, 900]
    assert document["next_window_open"] == "2026-11-27T18:00:00+00:00"


def test_preview_table_shows_batches_and_the_window(capsys):
    code, out, _ = run(
        capsys,
        "plan",
        "preview",
        "crm-sync-standard",
        "--tenants",
        str(EXAMPLE_TENANTS),
        "--config",
        str(CONFIG_DIR),
        "--now",
        "2026-11-27T19:00:00+00:00",
    )
    assert code == 0
    assert "canary" in out and "required" in out and "open until 2026-11-28 06:00 CST" in out


def test_preview_unknown_plan_lists_the_known_ones(capsys):
    code, _, err = run(
        capsys,
        "plan",
        "preview",
        "crm-sync-standrad",
        "--tenants",
        str(EXAMPLE_TENANTS),
        "--config",
        str(CONFIG_DIR),
    )
    assert code == 1 and "unknown plan 'crm-sync-standrad'" in err and "crm-sync-standard" in err


def test_preview_invalid_plan_prints_its_problems(capsys, write):
    path = write("upgrade_policies.yaml", THREE_MISTAKES)
    code, _, err = run(
        capsys,
        "plan",
        "preview",
        "ledger",
        "--tenants",
        str(EXAMPLE_TENANTS),
        "--config",
        str(path),
    )
    assert code == 1 and "plan 'ledger' is invalid" in err and "Mars/Olympus" in err


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('[{"id": "t-1"},\n {"id": }]', ":2:9: invalid JSON"),
        ('[{"id": "t-1"}, {"labels": {}}]', "[1].id: Field required"),
        ('{"id": "t-1"}', "expected a JSON array"),
    ],
)
def test_preview_bad_tenants_file_names_where(capsys, write, content, fragment):
    path = write("tenants.json", content)
    code, _, err = run(
        capsys,
        "plan",
        "preview",
        "crm-sync-standard",
        "--tenants",
        str(path),
        "--config",
        str(CONFIG_DIR),
    )
    assert code == 2 and fragment in err


def test_preview_with_no_matching_tenant_is_a_clear_error(capsys, write):
    path = write(
        "tenants.json", '[{"id": "t-0001", "labels": {"tier": "gold"}}, {"id": "x", "labels": {}}]'
    )
    code, _, err = run(
        capsys,
        "plan",
        "preview",
        "crm-sync-bronze",
        "--tenants",
        str(path),
        "--config",
        str(CONFIG_DIR),
    )
    assert code == 1 and "selects no tenant" in err


def test_schema_command_prints_the_committed_schema(capsys):
    code, out, _ = run(capsys, "plan", "schema")
    assert code == 0
    assert json.loads(out) == json.loads((CONFIG_DIR / "upgrade_policies.schema.json").read_text())


def test_preview_estimates_each_batch_and_the_fit_in_the_window(capsys, monkeypatch):
    monkeypatch.delenv("POWERX_LEDGER_URL", raising=False)
    code, out, _ = run(
        capsys,
        "plan",
        "preview",
        "crm-sync-standard",
        "--tenants",
        str(EXAMPLE_TENANTS),
        "--config",
        str(CONFIG_DIR),
        "--now",
        "2026-11-27T19:00:00+00:00",  # Saturday 03:00 in Shanghai: the window is open
    )
    assert code == 0
    estimate = out[out.index("deploy latency:") :].splitlines()[:8]
    assert estimate == [
        "deploy latency: default 30s per tenant: no ledger given (--ledger or $POWERX_LEDGER_URL)",
        "deploy: 20 upgrade(s) at a time per shard of up to 50, 1 shard(s) at a time",
        "batch 1 canary: deploy 30s (1 tenant(s), 1 shard(s), 1 wave(s)) + gate 11m30s "
        "(bake 10m) = 12m; verdict about 12m after the start",
        "batch 2 early: deploy 30s (3 tenant(s), 1 shard(s), 1 wave(s)) + gate 16m30s "
        "(bake 15m) = 17m; verdict about 29m after the start",
        "batch 3 half: approval wait (open-ended, up to 1d) + deploy 30s (14 tenant(s), "
        "1 shard(s), 1 wave(s)) + gate 31m30s (bake 30m) = 32m; verdict about 1h1m after the "
        "start",
        "batch 4 rest: deploy 30s (18 tenant(s), 1 shard(s), 1 wave(s)) + gate 16m30s "
        "(bake 15m) = 17m; verdict about 1h18m after the start",
        "total: 1h18m, started now (2026-11-28 03:00 CST): the window is open",
        "finishes about 04:18, inside the 02:00-06:00 window (Asia/Shanghai); not counting 1 "
        "approval wait(s), which are open-ended",
    ]


def test_preview_refuses_a_ledger_it_cannot_read(capsys, tmp_path):
    code, _, err = run(
        capsys,
        "plan",
        "preview",
        "crm-sync-standard",
        "--tenants",
        str(EXAMPLE_TENANTS),
        "--config",
        str(CONFIG_DIR),
        "--ledger",
        f"sqlite:///{tmp_path}",  # a directory, not a database file
    )
    assert code == 2 and "error: the deploy latency:" in err


def test_backtest_needs_a_ledger_and_names_an_unknown_run(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("POWERX_LEDGER_URL", raising=False)
    args = ("plan", "backtest", "crm-sync-standard", "--run", "manual__x", "--config")
    code, _, err = run(capsys, *args, str(CONFIG_DIR))
    assert code == 2 and "--ledger URL (or $POWERX_LEDGER_URL) is required" in err
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    code, _, err = run(capsys, *args, str(CONFIG_DIR), "--ledger", ledger)
    assert code == 2 and "--run 'manual__x': no such run in the ledger (latest: none)" in err
    edit = "policies.fast-lane.gate.failure_limit=2"
    code, _, err = run(capsys, *args, str(CONFIG_DIR), "--ledger", ledger, "--set", edit)
    assert code == 2 and "the plan's policy is 'standard-grey'" in err
