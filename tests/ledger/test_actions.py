"""Per-tenant actions: idempotent begin, finish states, attempts, filters, the claim guard."""

from __future__ import annotations

import pytest

from powerx_upgrade.ledger import (
    IdempotencyConflict,
    InvalidLedgerValue,
    TenantHeld,
    UnknownAction,
    UnknownRun,
)
from tests.ledger.conftest import start, upgrade

pytestmark = pytest.mark.unit


def test_begin_action_records_a_started_action(ledger):
    start(ledger)
    action = upgrade(ledger, "t-1", from_config='{"sync": "hourly"}')

    assert action.id > 0
    assert (action.run_id, action.plugin, action.tenant_id, action.batch_index) == (
        "run-1",
        "crm-sync",
        "t-1",
        0,
    )
    assert (action.kind, action.state, action.attempts, action.noop) == (
        "upgrade",
        "started",
        0,
        False,
    )
    assert (action.from_version, action.to_version) == ("2.3.1", "2.4.0")
    assert action.from_config == '{"sync": "hourly"}'
    assert action.started_at.tzinfo is not None
    assert action.finished_at is None
    assert not action.finished


def test_begin_action_with_a_known_key_returns_the_existing_record_unchanged(ledger):
    start(ledger)
    first = upgrade(ledger, "t-1")
    done = ledger.finish_action(first.idempotency_key, "succeeded", config_after="{}")

    again = upgrade(ledger, "t-1", from_version="2.4.0", batch=3)

    assert again == done
    assert again.state == "succeeded"
    assert again.from_version == "2.3.1"
    assert len(ledger.actions("run-1")) == 1


def test_a_key_reused_for_another_tenant_is_a_conflict(ledger):
    start(ledger)
    upgrade(ledger, "t-1", idempotency_key="k")
    with pytest.raises(IdempotencyConflict, match=r"'k'.*'t-1'.*not upgrade of tenant 't-2'"):
        upgrade(ledger, "t-2", idempotency_key="k")
    with pytest.raises(IdempotencyConflict):
        upgrade(ledger, "t-1", idempotency_key="k", kind="rollback")


@pytest.mark.parametrize("state", ["succeeded", "failed", "skipped", "refused"])
def test_finish_action_records_each_final_state_and_its_time(ledger, state):
    start(ledger)
    key = upgrade(ledger, "t-1").idempotency_key

    finished = ledger.finish_action(key, state)

    assert finished.state == state
    assert finished.finished
    assert finished.finished_at >= finished.started_at
    assert ledger.get_action(key) == finished


@pytest.mark.parametrize("state", ["started", "done", "SUCCEEDED"])
def test_finish_action_rejects_states_that_are_not_final(ledger, state):
    start(ledger)
    key = upgrade(ledger, "t-1").idempotency_key
    with pytest.raises(InvalidLedgerValue, match="state"):
        ledger.finish_action(key, state)
    assert ledger.get_action(key).state == "started"


def test_finish_action_keeps_versions_config_error_noop_and_detail(ledger):
    start(ledger)
    key = upgrade(ledger, "t-1").idempotency_key

    failed = ledger.finish_action(key, "failed", error="HTTP 503", detail={"http_status": 503})
    assert (failed.error, failed.attempts, failed.detail) == ("HTTP 503", 1, {"http_status": 503})

    done = ledger.finish_action(
        key, "succeeded", to_version="2.4.0-hotfix", config_after="{}", noop=True, detail={"ms": 40}
    )
    assert done.attempts == 2
    assert (done.to_version, done.config_after, done.noop, done.error) == (
        "2.4.0-hotfix",
        "{}",
        True,
        None,
    )
    assert done.detail == {"http_status": 503, "ms": 40, "earlier_errors": ["HTTP 503"]}

    assert ledger.finish_action(key, "succeeded", attempts=7).attempts == 7


def test_finish_action_clips_huge_errors(ledger):
    start(ledger)
    key = upgrade(ledger, "t-1").idempotency_key
    action = ledger.finish_action(key, "failed", error="x" * 100_000)
    assert len(action.error) <= 8000
    assert action.error.endswith("[truncated]")


def test_finish_action_of_an_unknown_key_names_the_key(ledger):
    with pytest.raises(UnknownAction, match="'run-1:t-9:upgrade'"):
        ledger.finish_action("run-1:t-9:upgrade", "succeeded")


def test_begin_action_needs_a_known_run_and_a_known_kind(ledger):
    with pytest.raises(UnknownRun, match="'ghost'"):
        upgrade(ledger, "t-1", run_id="ghost")
    start(ledger)
    with pytest.raises(InvalidLedgerValue, match="kind 'downgrade'"):
        upgrade(ledger, "t-1", kind="downgrade")
    assert ledger.actions("run-1") == []


def test_actions_filter_by_kind_batch_state_and_tenant_in_order(ledger):
    start(ledger)
    a = upgrade(ledger, "t-1", batch=0)
    b = upgrade(ledger, "t-2", batch=0)
    c = upgrade(ledger, "t-3", batch=1)
    ledger.finish_action(a.idempotency_key, "succeeded")
    ledger.finish_action(b.idempotency_key, "failed", error="boom")
    ledger.finish_action(c.idempotency_key, "succeeded")
    r = upgrade(
        ledger,
        "t-1",
        batch=None,
        kind="rollback",
        from_version="2.4.0",
        to_version="2.3.1",
        idempotency_key="run-1:t-1:rollback",
    )

    def ids(**filters):
        return [
            action.tenant_id + ":" + action.kind for action in ledger.actions("run-1", **filters)
        ]

    assert ids() == ["t-1:upgrade", "t-2:upgrade", "t-3:upgrade", "t-1:rollback"]
    assert [action.id for action in ledger.actions("run-1")] == [a.id, b.id, c.id, r.id]
    assert ids(kind="upgrade", state="succeeded") == ["t-1:upgrade", "t-3:upgrade"]
    assert ids(batch_index=0) == ["t-1:upgrade", "t-2:upgrade"]
    assert ids(kind="rollback") == ["t-1:rollback"]
    assert ids(state="started") == ["t-1:rollback"]
    assert ids(tenant_id="t-1") == ["t-1:upgrade", "t-1:rollback"]
    assert ledger.actions("other-run") == []


def test_begin_action_claims_an_unheld_tenant_for_the_run(ledger):
    start(ledger, "run-1")
    start(ledger, "run-2")
    upgrade(ledger, "t-1", run_id="run-1")

    assert ledger.claimed_tenants("run-1") == ["t-1"]
    assert ledger.claim_tenants("run-2", "crm-sync", ["t-1"]) == {"t-1": "run-1"}


def test_begin_action_on_a_tenant_held_by_another_active_run_raises(ledger):
    start(ledger, "run-1")
    start(ledger, "run-2")
    ledger.claim_tenants("run-1", "crm-sync", ["t-1"])

    with pytest.raises(TenantHeld, match=r"'t-1'.*'run-1'") as raised:
        upgrade(ledger, "t-1", run_id="run-2")

    assert raised.value.holder == "run-1"
    assert ledger.actions("run-2") == []


def test_a_finished_run_may_still_roll_back_an_unheld_tenant_without_claiming_it(ledger):
    start(ledger, "run-1")
    upgrade(ledger, "t-1", run_id="run-1")
    ledger.finish_run("run-1", "rollback_failed")

    repair = upgrade(ledger, "t-1", kind="rollback", idempotency_key="repair:t-1")

    assert repair.state == "started"
    assert ledger.claimed_tenants("run-1") == []


def test_a_finished_run_may_not_touch_a_tenant_another_run_holds_now(ledger):
    start(ledger, "run-1")
    ledger.finish_run("run-1", "rollback_failed")
    start(ledger, "run-2")
    ledger.claim_tenants("run-2", "crm-sync", ["t-1"])

    with pytest.raises(TenantHeld):
        upgrade(ledger, "t-1", kind="rollback", idempotency_key="repair:t-1")


def test_begin_action_for_another_plugin_than_the_run_is_refused(ledger):
    start(ledger)
    with pytest.raises(InvalidLedgerValue, match="plugin 'billing'"):
        upgrade(ledger, "t-1", plugin="billing")


def test_a_rollback_to_an_unknown_previous_version_may_name_no_version(ledger):
    start(ledger)
    upgrade(ledger, "t-1", from_version=None)
    rollback = upgrade(
        ledger, "t-1", kind="rollback", from_version="2.4.0", to_version="", idempotency_key="rb"
    )
    assert rollback.to_version == ""
    with pytest.raises(InvalidLedgerValue, match="to_version"):
        upgrade(ledger, "t-2", to_version=None)


def _starts(tenants, run_id="run-1"):
    from powerx_upgrade.ledger import ActionStart

    return [
        ActionStart(
            tenant_id=t,
            idempotency_key=f"{run_id}:{t}:upgrade:2.4.0",
            to_version="2.4.0",
            batch_index=1,
            from_version="2.3.1",
            from_config=f"cfg-{t}",
        )
        for t in tenants
    ]


def test_begin_actions_records_a_shard_in_one_call_and_a_replay_returns_the_same_records(ledger):
    start(ledger)
    tenants = [f"t-{i}" for i in range(120)]
    first = ledger.begin_actions(
        run_id="run-1", plugin="crm-sync", kind="upgrade", starts=_starts(tenants)
    )
    assert [a.tenant_id for a in first] == tenants
    assert {a.state for a in first} == {"started"}
    assert first[7].from_config == "cfg-t-7" and first[7].batch_index == 1
    assert ledger.claimed_tenants("run-1") == sorted(tenants)
    ledger.finish_action(first[0].idempotency_key, "succeeded")

    again = ledger.begin_actions(
        run_id="run-1", plugin="crm-sync", kind="upgrade", starts=_starts(tenants)
    )
    assert again[0].state == "succeeded"
    assert [a.id for a in again] == [a.id for a in first]
    assert len(ledger.actions("run-1")) == 120


def test_begin_actions_writes_nothing_when_one_tenant_is_held_by_another_run(ledger):
    start(ledger)
    start(ledger, "run-2")
    ledger.claim_tenants("run-2", "crm-sync", ["t-5"])
    with pytest.raises(TenantHeld, match="t-5"):
        ledger.begin_actions(
            run_id="run-1",
            plugin="crm-sync",
            kind="upgrade",
            starts=_starts(["t-1", "t-5", "t-9"]),
        )
    assert ledger.actions("run-1") == []


def test_begin_actions_refuses_a_key_of_another_tenant(ledger):
    start(ledger)
    upgrade(ledger, "t-1", idempotency_key="shared")
    bad = _starts(["t-2"])
    bad = [type(bad[0])(**{**bad[0].__dict__, "idempotency_key": "shared"})]
    with pytest.raises(IdempotencyConflict):
        ledger.begin_actions(run_id="run-1", plugin="crm-sync", kind="upgrade", starts=bad)


def test_finish_actions_records_every_outcome_and_its_audit_in_one_transaction(ledger):
    from powerx_upgrade.ledger import ActionOutcome, AuditEntry

    start(ledger)
    started = ledger.begin_actions(
        run_id="run-1", plugin="crm-sync", kind="upgrade", starts=_starts(["t-1", "t-2", "t-3"])
    )
    ledger.finish_action(started[2].idempotency_key, "failed", error="boom", attempts=1)
    outcomes = [
        ActionOutcome(
            idempotency_key=a.idempotency_key,
            state="succeeded",
            config_after=f"after-{a.tenant_id}",
            attempts=2,
            detail={"operation": f"op-{a.tenant_id}"},
            audit=AuditEntry("tenant.upgrade.succeeded", {"tenant": a.tenant_id}, f"au-{i}"),
        )
        for i, a in enumerate(started)
    ]
    done = ledger.finish_actions(outcomes)

    assert [(a.tenant_id, a.state, a.attempts) for a in done] == [
        ("t-1", "succeeded", 2),
        ("t-2", "succeeded", 2),
        ("t-3", "succeeded", 2),
    ]
    assert done[0].config_after == "after-t-1" and done[0].to_version == "2.4.0"
    assert done[0].finished_at is not None
    assert done[2].detail == {"operation": "op-t-3", "earlier_errors": ["boom"]}
    audits = {r.audit_id: r for r in ledger.audit_records("run-1")}
    assert set(audits) >= {"au-0", "au-1", "au-2"}
    ledger.finish_actions(outcomes)  # a replay: the audit ids are known, nothing doubles
    assert len(ledger.audit_records("run-1")) == len(audits)


def test_finish_actions_writes_nothing_when_one_key_is_unknown(ledger):
    from powerx_upgrade.ledger import ActionOutcome

    start(ledger)
    started = ledger.begin_actions(
        run_id="run-1", plugin="crm-sync", kind="upgrade", starts=_starts(["t-1"])
    )
    with pytest.raises(UnknownAction):
        ledger.finish_actions(
            [
                ActionOutcome(started[0].idempotency_key, "succeeded"),
                ActionOutcome("nobody", "succeeded"),
            ]
        )
    assert ledger.get_action(started[0].idempotency_key).state == "started"
