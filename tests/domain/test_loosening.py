"""Per field: which policy changes loosen it (POST /plan then needs an approval token) and
which tighten or leave it (no token)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from powerx_upgrade.domain.loosening import loosenings
from powerx_upgrade.domain.policy import Policy

pytestmark = pytest.mark.unit

BASE: dict[str, Any] = {
    "batches": [
        {"name": "canary", "count": 3, "bake": "10m", "approval": "required"},
        {"name": "rest", "ratio": 0.5, "bake": "10m"},
        {"name": "all", "ratio": 1.0, "bake": "10m"},
    ],
    "deploy": {"concurrency": 10, "max_failed": "2%"},
    "gate": {
        "failure_limit": 0,
        "min_coverage": 0.9,
        "missing_data": {"after": "5m"},
        "checks": [
            {"metric": "error_rate", "op": "<=", "limit": 0.05},
            {"metric": "requests", "op": ">=", "limit": 10},
            {
                "metric": "latency_p95_ms",
                "op": "<=",
                "limit": "+20%",
                "baseline": "pre_upgrade",
                "scope": "per_tenant",
                "max_breaching_tenants": 1,
                "min_samples": 3,
            },
        ],
    },
    "rollback": {"mode": "auto", "scope": "all_upgraded"},
    "pause": {"default": "rollback"},
    "alerts": {"error_rate": 0.05},
    "control": {
        "require_mfa_for": ["rollback", "approve"],
        "token_max_lifetime": "1h",
        "approvers": ["alice", "bob"],
    },
}


def changed(path: str, value: Any) -> Policy:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    target = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is _REMOVE:
        del target[int(last)]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return Policy.model_validate(data)


_REMOVE = object()
LOOSER = [
    ("batches.0.count", 5, "batches[0].count"),
    ("batches.1.ratio", 0.8, "batches[1].ratio"),
    ("batches.1.bake", "5m", "batches[1].bake"),
    ("batches.0.approval", "none", "batches[0].approval"),
    ("batches.1", _REMOVE, "batches"),
    ("deploy.concurrency", 50, "deploy.concurrency"),
    ("deploy.max_failed", "5%", "deploy.max_failed"),
    ("deploy.max_failed", 3, "deploy.max_failed"),
    ("gate.failure_limit", 2, "gate.failure_limit"),
    ("gate.min_coverage", 0.5, "gate.min_coverage"),
    ("gate.missing_data", {"after": "30m"}, "gate.missing_data.after"),
    ("gate.checks.0.limit", 0.1, "gate.checks[error_rate/batch].limit"),
    ("gate.checks.1.limit", 1, "gate.checks[requests/batch].limit"),
    ("gate.checks.2.limit", "+50%", "gate.checks[latency_p95_ms/per_tenant].limit"),
    (
        "gate.checks.2.max_breaching_tenants",
        4,
        "gate.checks[latency_p95_ms/per_tenant].max_breaching_tenants",
    ),
    ("gate.checks.2.min_samples", 1, "gate.checks[latency_p95_ms/per_tenant].min_samples"),
    ("gate.checks.0.op", "<", "gate.checks[error_rate/batch].op"),
    ("gate.checks.1", _REMOVE, "gate.checks[requests/batch]"),
    ("rollback.mode", "manual", "rollback.mode"),
    ("rollback.scope", "batch", "rollback.scope"),
    ("pause.default", "stop", "pause.default"),
    ("alerts.error_rate", 0.2, "alerts.error_rate"),
    ("control.require_mfa_for", ["rollback"], "control.require_mfa_for"),
    ("control.token_max_lifetime", "8h", "control.token_max_lifetime"),
    ("control.approvers", ["alice", "mallory"], "control.approvers"),
    ("control.approvers", [], "control.approvers"),
]
TIGHTER_OR_NEUTRAL = [
    ("batches.0.count", 2),
    ("batches.1.ratio", 0.3),
    ("batches.1.bake", "30m"),
    ("batches.1.approval", "required"),
    ("deploy.concurrency", 5),
    ("deploy.max_failed", "1%"),
    ("deploy.retries", 0),
    ("deploy.shard_size", 10),
    ("gate.checks.0.limit", 0.01),
    ("gate.checks.1.limit", 100),
    ("gate.checks.2.limit", "+10%"),
    ("gate.checks.2.max_breaching_tenants", 0),
    ("gate.min_coverage", 1.0),
    ("rollback.concurrency", 5),
    ("alerts.error_rate", 0.01),
    ("control.require_mfa_for", ["rollback", "approve", "adjust"]),
    ("control.token_max_lifetime", "10m"),
    ("control.approvers", ["alice"]),
    ("description", "only words"),
]


@pytest.mark.parametrize(("path", "value", "reported"), LOOSER)
def test_a_looser_field_is_reported_by_its_path(path, value, reported):
    found = loosenings(Policy.model_validate(BASE), changed(path, value))
    assert found and found[0].path == reported and found[0].why, found
    if path != "batches.1":  # removing a batch also moves the next one: two findings
        assert len(found) == 1, found


@pytest.mark.parametrize(("path", "value"), TIGHTER_OR_NEUTRAL)
def test_a_tighter_or_neutral_field_needs_no_token(path, value):
    assert loosenings(Policy.model_validate(BASE), changed(path, value)) == []


def test_the_same_policy_loosens_nothing():
    assert loosenings(Policy.model_validate(BASE), Policy.model_validate(BASE)) == []
