"""Policy backtest on a recorded case-B run: the rollout DAG runs whole (`airflow dags test`)
against the sandbox, then `powerx plan backtest` replays its ledger's gate series with the
policy as it is (the live verdicts come back, at the same pokes), with a tightened error-rate
limit (batch 1 fails where it passed) and with a loosened one (batch 2 no longer fails, and
the series ends before any verdict: the live gate stopped there)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.cli.main import main
from powerx_upgrade.ledger import Ledger
from tests.airflow_harness import E2E_CONFIG, E2E_SHA256, dags_test
from tests.conftest import CONFIG_DIR
from tests.signing import signed

pytestmark = pytest.mark.e2e

PLAN = "crm-sync-e2e"


def backtest(capsys, ledger_url: str, run_id: str, *edits: str, fmt: str = "json"):
    args = ["plan", "backtest", PLAN, "--run", run_id, "--ledger", ledger_url]
    args += ["--config", str(E2E_CONFIG), "--format", fmt]
    for edit in edits:
        args += ["--set", edit]
    capsys.readouterr()
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)["runs"][0]["batches"] if fmt == "json" else out


def first_poke_over(book: Ledger, run_id: str, batch: int, limit: float) -> str:
    """When the batch's pooled error rate first exceeded `limit`, from the recorded inputs."""
    for record in book.gate_evaluations(run_id, batch):
        for m in record.measurements:
            data = m.get("input") if m.get("metric") == "gate_input" else None
            if not data or "batch" not in data:
                continue
            stats = data["batch"].values()
            requests = sum(s["requests"] for s in stats if s["samples"])
            errors = sum(s["errors"] for s in stats if s["samples"])
            if requests and errors / requests > limit:
                return data["now"]
    raise AssertionError(f"batch {batch} never exceeded {limit}")


def test_backtest_replays_case_b_and_moves_the_verdicts_with_the_limit(
    airflow_home, tmp_path, capsys
):
    with running_sandbox(CONFIG_DIR / "scenarios" / "bad-version.yaml") as url:
        result = dags_test(
            airflow_home,
            f"plugin_upgrade__{PLAN}",
            sandbox_url=url,
            ledger_file=tmp_path / "ledger.db",
            conf=signed({"target_version": "2.5.0", "reason": "case B"}, E2E_SHA256),
            extra_env={"POWERX_UPGRADE_REPORTS": str(tmp_path / "reports")},
        )
    book = Ledger(result.ledger_url)
    (record,) = book.runs()
    run_id = record.run_id
    assert record.outcome == "rolled_back", result.tail()
    finals = {g.batch_index: g for g in book.gate_evaluations(run_id, final_only=True)}
    assert {i: g.phase for i, g in finals.items()} == {1: "pass", 2: "fail"}

    # The policy as it is: the same verdicts at the same pokes.
    same = backtest(capsys, result.ledger_url, run_id)
    assert [(b["batch"], b["backtest"], b["live"]) for b in same] == [
        (1, "pass", "pass"),
        (2, "fail", "fail"),
    ]
    assert all(b["backtest_at"] == b["live_at"] and b["missing"] is None for b in same), same
    assert all(b["pokes_replayed"] >= 1 for b in same)

    # Tightened to 0.5 %: batch 1 (gold and silver at ~1.2 %) fails at its first poke over it.
    tight = backtest(
        capsys, result.ledger_url, run_id, "policies.quick-grey.gate.checks[0].limit=0.005"
    )
    assert tight[0]["backtest"] == "fail" and tight[0]["live"] == "pass"
    assert tight[0]["backtest_at"] == first_poke_over(book, run_id, 1, 0.005)
    assert datetime.fromisoformat(tight[0]["backtest_at"]) < datetime.fromisoformat(
        tight[0]["live_at"]
    )
    assert tight[1]["backtest"] == "fail"

    # Loosened to 20 %: bronze's ~9 % no longer fails; the live gate stopped at its failure, so
    # the recorded series ends without a verdict, and the backtest says so.
    loose = backtest(
        capsys, result.ledger_url, run_id, "policies.quick-grey.gate.checks[0].limit=0.2"
    )
    assert loose[0]["backtest"] == "pass" and loose[0]["backtest_at"] == same[0]["backtest_at"]
    assert loose[1]["backtest"] is None and loose[1]["live"] == "fail"
    assert loose[1]["backtest_reason"].startswith("no verdict by ")

    text = backtest(
        capsys,
        result.ledger_url,
        run_id,
        "policies.quick-grey.gate.checks[0].limit=0.005",
        fmt="text",
    )
    at = datetime.fromisoformat(tight[0]["backtest_at"]).strftime("%H:%M:%S")
    live = datetime.fromisoformat(tight[0]["live_at"]).strftime("%H:%M:%S")
    assert "with gate.checks[0].limit 0.05 -> 0.005" in text, text
    assert f"batch 1 gold-silver: would have failed at {at} (" in text, text
    assert f"; it passed at {live}\n" in text, text
    assert "(the backtest's run would have stopped at batch 1)" in text, text
