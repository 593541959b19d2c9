"""Decisions after a verdict, and rollback scopes."""

from __future__ import annotations

import pytest

from powerx_upgrade.domain.decide import Action, Upgraded, decide, rollback_targets
from powerx_upgrade.domain.gate import Phase
from powerx_upgrade.domain.models import Policy

pytestmark = pytest.mark.unit


def policy(**over) -> Policy:
    spec = {
        "batches": [{"ratio": 1.0, "bake": "10m"}],
        "gate": {
            "missing_data": {"action": "rollback"},
            "inconclusive": {"action": "pause"},
            "checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}],
        },
    }
    spec.update(over)
    return Policy.model_validate(spec)


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (Phase.PASS, Action.PROMOTE),
        (Phase.FAIL, Action.ROLLBACK),
        (Phase.NO_DATA, Action.ROLLBACK),
        (Phase.INCONCLUSIVE, Action.PAUSE),
        (Phase.ROLLBACK_REQUESTED, Action.ROLLBACK),
        (Phase.PAUSE_REQUESTED, Action.PAUSE),
        ("garbage", Action.ROLLBACK),
    ],
)
def test_verdicts_map_to_actions(phase, expected):
    assert decide(phase, policy()).action is expected


def test_manual_rollback_mode_pauses_on_failure():
    assert decide(Phase.FAIL, policy(rollback={"mode": "manual"})).action is Action.PAUSE


def test_running_is_never_a_promotion():
    assert decide(Phase.RUNNING, policy()).action is Action.ROLLBACK


UPGRADED = [
    Upgraded("t-1", 1, "2.3.1", "succeeded"),
    Upgraded("t-2", 2, "2.3.1", "succeeded"),
    Upgraded("t-3", 2, "2.3.1", "failed"),
    Upgraded("t-4", 2, "2.3.1", "succeeded"),
]


def ids(items):
    return [u.tenant for u in items]


def test_all_upgraded_scope_takes_every_touched_tenant():
    assert ids(rollback_targets("all_upgraded", UPGRADED, failing_batch=2)) == [
        "t-1",
        "t-2",
        "t-3",
        "t-4",
    ]


def test_batch_scope_takes_the_failing_batch():
    assert ids(rollback_targets("batch", UPGRADED, failing_batch=2)) == ["t-2", "t-3", "t-4"]


def test_failed_tenants_scope_takes_failed_deploys_and_breaching_tenants():
    chosen = rollback_targets("failed_tenants", UPGRADED, failing_batch=2, breaching=["t-4"])
    assert ids(chosen) == ["t-3", "t-4"]


def test_failed_tenants_scope_falls_back_to_the_batch_when_nobody_is_to_blame():
    chosen = rollback_targets("failed_tenants", UPGRADED[:2], failing_batch=2)
    assert ids(chosen) == ["t-2"]


def test_tenants_still_on_their_old_version_are_left_alone():
    current = {"t-1": "2.4.0", "t-2": "2.4.0", "t-3": "2.3.1", "t-4": "2.4.0"}
    chosen = rollback_targets(
        "all_upgraded", UPGRADED, failing_batch=2, current_versions=current, target_version="2.4.0"
    )
    assert ids(chosen) == ["t-1", "t-2", "t-4"]
