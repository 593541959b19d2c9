"""Tenant claims: one active run per tenant of a plugin; refusals are recorded clearly."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from powerx_upgrade.ledger import InvalidLedgerValue, RunNotActive, UnknownRun
from tests.ledger.conftest import sql, start

pytestmark = pytest.mark.unit


def test_a_second_active_run_is_refused_the_tenants_the_first_holds(ledger):
    start(ledger, "run-1")
    start(ledger, "run-2")
    assert ledger.claim_tenants("run-1", "crm-sync", ["t-1", "t-2"]) == {}

    refused = ledger.claim_tenants("run-2", "crm-sync", ["t-2", "t-3"])

    assert refused == {"t-2": "run-1"}
    assert ledger.claimed_tenants("run-1") == ["t-1", "t-2"]
    assert ledger.claimed_tenants("run-2") == ["t-3"]
    assert ledger.tenant_holder("crm-sync", "t-2") == "run-1"


def test_claiming_own_tenants_again_is_fine(ledger):
    start(ledger)
    ledger.claim_tenants("run-1", "crm-sync", ["t-1", "t-2"])
    assert ledger.claim_tenants("run-1", "crm-sync", ["t-2", "t-1", "t-1"]) == {}
    assert ledger.claimed_tenants("run-1") == ["t-1", "t-2"]


def test_tenants_are_free_again_after_the_holder_finishes(ledger):
    start(ledger, "run-1")
    start(ledger, "run-2")
    ledger.claim_tenants("run-1", "crm-sync", ["t-1", "t-2"])
    ledger.finish_run("run-1", "promoted")

    assert ledger.claimed_tenants("run-1") == []
    assert ledger.tenant_holder("crm-sync", "t-1") is None
    assert ledger.claim_tenants("run-2", "crm-sync", ["t-1", "t-2"]) == {}


def test_release_tenants_frees_them_and_counts_them(ledger):
    start(ledger, "run-1")
    start(ledger, "run-2")
    ledger.claim_tenants("run-1", "crm-sync", ["t-1", "t-2", "t-3"])

    assert ledger.release_tenants("run-1") == 3
    assert ledger.release_tenants("run-1") == 0
    assert ledger.claim_tenants("run-2", "crm-sync", ["t-1"]) == {}


def test_the_same_tenant_id_of_another_plugin_is_a_different_tenant(ledger):
    start(ledger, "run-1")
    start(ledger, "run-2", plugin="billing")
    ledger.claim_tenants("run-1", "crm-sync", ["t-1"])
    assert ledger.claim_tenants("run-2", "billing", ["t-1"]) == {}


def test_a_finished_run_cannot_claim(ledger):
    start(ledger)
    ledger.finish_run("run-1", "stopped")
    with pytest.raises(RunNotActive, match=r"'run-1'.*'stopped'"):
        ledger.claim_tenants("run-1", "crm-sync", ["t-1"])
    assert ledger.claimed_tenants("run-1") == []


def test_claims_need_a_known_run_of_the_same_plugin(ledger):
    start(ledger)
    with pytest.raises(UnknownRun, match="'ghost'"):
        ledger.claim_tenants("ghost", "crm-sync", ["t-1"])
    with pytest.raises(InvalidLedgerValue, match=r"'billing'.*'crm-sync'"):
        ledger.claim_tenants("run-1", "billing", ["t-1"])


def test_thousands_of_tenants_are_claimed_in_one_call(ledger):
    start(ledger, "run-1")
    start(ledger, "run-2")
    ledger.claim_tenants("run-1", "crm-sync", [f"t-{i:04d}" for i in range(0, 2400, 2)])

    refused = ledger.claim_tenants("run-2", "crm-sync", [f"t-{i:04d}" for i in range(2400)])

    assert len(refused) == 1200
    assert set(refused.values()) == {"run-1"}
    assert len(ledger.claimed_tenants("run-2")) == 1200


def test_the_database_itself_refuses_a_second_holder(ledger, ledger_url):
    start(ledger, "run-1")
    start(ledger, "run-2")
    ledger.claim_tenants("run-1", "crm-sync", ["t-1"])
    with pytest.raises(IntegrityError):
        sql(
            ledger_url,
            "INSERT INTO powerx_ledger_tenant_claims (plugin, tenant_id, run_id, claimed_at)"
            " VALUES ('crm-sync', 't-1', 'run-2', '2026-01-01 00:00:00')",
        )
    assert ledger.tenant_holder("crm-sync", "t-1") == "run-1"


def test_record_refusal_names_the_holder_and_is_recorded_once(ledger):
    start(ledger, "run-1")
    start(ledger, "run-2")
    ledger.claim_tenants("run-1", "crm-sync", ["t-1"])

    refusal = ledger.record_refusal(
        run_id="run-2", plugin="crm-sync", tenant_id="t-1", batch_index=1, reason="held by run-1"
    )
    again = ledger.record_refusal(
        run_id="run-2", plugin="crm-sync", tenant_id="t-1", batch_index=1, reason="held by run-1"
    )

    assert again == refusal
    assert (refusal.kind, refusal.state, refusal.tenant_id) == ("upgrade", "refused", "t-1")
    assert refusal.to_version == "2.4.0"
    assert refusal.error == "held by run-1"
    assert refusal.detail == {"held_by": "run-1"}
    assert refusal.finished_at is not None
    assert ledger.actions("run-2", state="refused") == [refusal]
    assert ledger.actions("run-1") == []
