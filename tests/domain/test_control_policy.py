"""The policy's `control` knob: which approval tokens need MFA, and how long they may live."""

from __future__ import annotations

from datetime import timedelta

import pytest

from powerx_upgrade.security.approval import ACTIONS
from tests.domain.test_config import POLICY, only, parse

pytestmark = pytest.mark.unit


def test_by_default_every_action_needs_mfa_and_tokens_live_at_most_an_hour():
    control = parse(POLICY).policies["std"].control
    assert control.require_mfa_for == list(ACTIONS)
    assert control.token_max_lifetime == timedelta(hours=1)


def test_a_plan_can_relax_mfa_and_shorten_the_lifetime_through_overrides():
    result = parse(
        POLICY
        + """
    control: {require_mfa_for: [rollback, takeover]}
plans:
  p:
    plugin: x
    policy: std
    overrides:
      control: {token_max_lifetime: 15m}
"""
    )
    assert result.problems == []
    control = result.plans["p"].policy.control
    assert control.require_mfa_for == ["rollback", "takeover"]
    assert control.token_max_lifetime == timedelta(minutes=15)
    assert result.policies["std"].control.token_max_lifetime == timedelta(hours=1)


def test_an_unknown_action_is_named_with_its_path():
    result = parse(POLICY + "    control: {require_mfa_for: [rollback, deploy]}\n")
    problem = only(result.errors, path="policies.std.control.require_mfa_for[1]")
    assert "'deploy'" in problem.message and "'rollback'" in problem.message


@pytest.mark.parametrize("value", ["0s", "soon"])
def test_a_lifetime_must_be_a_positive_duration(value):
    result = parse(POLICY + f"    control: {{token_max_lifetime: {value}}}\n")
    problem = only(result.errors, path="policies.std.control.token_max_lifetime")
    assert "token_max_lifetime" in problem.message or "duration" in problem.message
