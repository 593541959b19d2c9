"""What a report is built from: the run's identity, its ledger records, and the indexes the
report's sections read them through."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any
from urllib.parse import quote

from powerx_upgrade.ledger import Ledger
from powerx_upgrade.ledger.action_rows import ActionRow
from powerx_upgrade.ledger.records import (
    ActionRecord,
    ApprovalRecord,
    DecisionRecord,
    GateRecord,
    RunRecord,
)
from powerx_upgrade.reporting.collector import collector_paused

Action = ActionRecord | ActionRow
"""An action as the report reads it: a ledger record, or a light row of the same fields."""


@dataclass(frozen=True)
class RunIdentity:
    """What the DAG knows of a run even when the ledger holds nothing (refused in preflight).

    :param error: why the run ended early, in words (shown in the report and the post-mortem).
    :param outcome: the outcome the finalize step settled, when the ledger has none.
    """

    run_id: str
    dag_id: str
    plan_id: str
    plugin: str | None = None
    target_version: str | None = None
    triggered_by: str | None = None
    reason: str | None = None
    conf: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    outcome: str | None = None


def airflow_run_url(base_url: str | None, dag_id: str, run_id: str) -> str | None:
    """`{base}/dags/{dag_id}/runs/{run_id}`, ids escaped for a URL path (`+`, `:` in run ids)."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


@dataclass(frozen=True)
class RunRecords:
    """Everything the ledger holds about one run; `run` is None for a run it never saw."""

    run: RunRecord | None
    actions: Sequence[Action] = ()
    """The run's actions: records, or (read by `from_ledger`) light rows with the same fields."""
    gates: Sequence[GateRecord] = ()
    decisions: Sequence[DecisionRecord] = ()
    approvals: Sequence[ApprovalRecord] = ()
    """Approval tokens used on this run (never the tokens: who, what, when, token id)."""

    @classmethod
    def from_ledger(cls, ledger: Ledger, run_id: str) -> RunRecords:
        with collector_paused():
            run = ledger.get_run(run_id)
            if run is None:
                return cls(None)
            return cls(
                run,
                tuple(ledger.action_rows(run_id)),  # a fleet's actions: light rows (issue 16)
                tuple(ledger.gate_evaluations(run_id)),
                tuple(ledger.decisions(run_id)),
                tuple(ledger.approvals(run_id=run_id)),
            )


class Facts:
    """The records indexed the ways the report reads them (one pass each: 10,000 tenants)."""

    def __init__(self, records: RunRecords) -> None:
        run = records.run
        self.planned: list[dict[str, Any]] = list(run.batches or []) if run else []
        self.upgrades: dict[str, Action] = {}
        self.rollbacks: dict[str, Action] = {}
        self.upgrades_by_batch: dict[int, list[Action]] = {}
        for action in sorted(records.actions, key=attrgetter("id")):
            if action.kind == "rollback":
                self.rollbacks[action.tenant_id] = action
                continue
            self.upgrades[action.tenant_id] = action
            self.upgrades_by_batch.setdefault(action.batch_index or 0, []).append(action)
        self.gates_by_batch: dict[int, list[GateRecord]] = {}
        for gate in sorted(records.gates, key=lambda g: (g.evaluated_at, g.id)):
            self.gates_by_batch.setdefault(gate.batch_index, []).append(gate)
        self.decisions: list[DecisionRecord] = sorted(
            records.decisions, key=lambda d: (d.decided_at, d.id)
        )
        self.baseline: dict[str, Any] = dict(run.baseline or {}) if run else {}
        self.target = run.target_version if run else None

    def final_gate(self, batch: int) -> GateRecord | None:
        finals = [g for g in self.gates_by_batch.get(batch, []) if g.final]
        return finals[-1] if finals else None

    def decisions_of(self, batch: int, kind: str) -> list[DecisionRecord]:
        return [d for d in self.decisions if d.batch_index == batch and d.kind == kind]
