"""Limits a policy states and the run keeps: 0s durations refused (or warned), success floors,
the blast-radius budget, downgrades named."""

from __future__ import annotations

import textwrap

import pytest

from powerx_upgrade.domain.alerts import Rate, success_floor_alert
from powerx_upgrade.domain.budget import budget_breach
from powerx_upgrade.domain.config import parse_config
from powerx_upgrade.domain.models import BudgetSpec
from powerx_upgrade.domain.versions import downgrades

pytestmark = pytest.mark.unit

POLICY = """
version: 1
policies:
  std:
    batches:
      - {name: canary, ratio: 0.1, bake: 10m}
      - {ratio: 1.0, bake: 10m}
    gate:
      poke_interval: 30s
      signal_delay: 1m
      checks:
        - {metric: error_rate, op: "<=", limit: 0.05}
"""


def parse(text: str):
    return parse_config([("upgrade_policies.yaml", textwrap.dedent(text).lstrip("\n"))])


def problem_at(result, path: str):
    found = [p for p in result.problems if p.path == path]
    assert len(found) == 1, result.problems
    return found[0]


def test_a_zero_bake_is_refused_with_its_line_and_field():
    result = parse(
        POLICY.replace("{name: canary, ratio: 0.1, bake: 10m}", "{ratio: 0.1, bake: 0s}")
    )
    problem = problem_at(result, "policies.std.batches[0].bake")
    assert problem.severity == "error" and "bake 0s" in problem.message and problem.line == 5
    assert "std" not in result.policies


def test_a_zero_poke_interval_is_refused_as_a_busy_loop():
    result = parse(POLICY.replace("poke_interval: 30s", "poke_interval: 0s"))
    problem = problem_at(result, "policies.std.gate.poke_interval")
    assert problem.severity == "error" and "busy loop" in problem.message
    assert "std" not in result.policies


def test_a_zero_signal_delay_is_only_a_warning():
    result = parse(POLICY.replace("signal_delay: 1m", "signal_delay: 0s"))
    problem = problem_at(result, "policies.std.gate.signal_delay")
    assert problem.severity == "warning" and "without lag" in problem.message
    assert "std" in result.policies


def test_success_floors_and_budget_are_read_from_the_policy_with_defaults():
    default = parse(POLICY).policies["std"]
    assert (default.success_floors.upgrade, default.success_floors.batch) == (0.98, 0.95)
    assert default.budget.max_exposed is None and default.budget.max_failed_tenants is None
    text = POLICY + "    success_floors: {upgrade: 99.5%, batch: 0.9}\n"
    text += "    budget: {max_exposed: 10, max_failed_tenants: 2}\n"
    policy = parse(text).policies["std"]
    assert policy.success_floors.upgrade == pytest.approx(0.995)
    assert policy.success_floors.batch == 0.9
    assert (policy.budget.max_exposed, policy.budget.max_failed_tenants) == (10, 2)


def test_a_floor_above_100_percent_is_refused():
    result = parse(POLICY + "    success_floors: {upgrade: 120%}\n")
    assert any("success floor" in p.message for p in result.errors), result.problems


def test_a_missed_floor_is_one_alert_naming_each_rate_below_it():
    rates = [Rate("upgrade", 96, 100, 0.98), Rate("batch", 4, 4, 0.95), Rate("x", 0, 0, 0.5)]
    alert = success_floor_alert(rates)
    assert alert is not None and alert.rule == "success_floor"
    assert "upgrade success 96.0% (96/100) is below its floor 98%" in alert.message
    assert set(alert.context) == {"upgrade"}
    assert success_floor_alert([Rate("upgrade", 98, 100, 0.98)]) is None


def test_the_budget_counts_failures_everywhere_and_exposure_before_the_last_batch():
    budget = BudgetSpec(max_exposed=5, max_failed_tenants=1)
    assert budget_breach(budget, exposed=5, failed=1, last_batch=False) is None
    exposed = budget_breach(budget, exposed=6, failed=0, last_batch=False)
    assert exposed is not None and (exposed.limit, exposed.value, exposed.allowed) == (
        "max_exposed",
        6,
        5,
    )
    assert budget_breach(budget, exposed=60, failed=0, last_batch=True) is None
    failed = budget_breach(budget, exposed=60, failed=2, last_batch=True)
    assert failed is not None and failed.limit == "max_failed_tenants"


def test_downgrades_are_named_and_versions_compare_as_numbers():
    versions = {"a": "2.10.0", "b": "2.9.1", "c": "2.4.0", "d": "weird!", "e": None}
    found = downgrades("2.9.2", versions, ["a", "b", "c", "d", "e"])
    assert found.newer == (("a", "2.10.0"),)
    assert found.unparsed == (("d", "weird!"),)
    assert "a (2.10.0)" in found.message("2.9.2") and "allow_downgrade" in found.message("2.9.2")
