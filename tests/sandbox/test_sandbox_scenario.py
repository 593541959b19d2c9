"""Scenario files: the shipped ones load, fleets are built deterministically, errors name file:line path."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from powerx_dev.sandbox.faults import ErrorRateFault
from powerx_dev.sandbox.scenario import ScenarioError, load_scenario, parse_scenario

pytestmark = pytest.mark.unit

SCENARIOS = Path(__file__).resolve().parents[2] / "include" / "config" / "scenarios"

BASE = """\
seed: 42
plugin: crm-sync
tenants: {count: 60, id_prefix: t-, version: 2.3.1,
          labels: {tier: {gold: 0.2, silver: 0.3, bronze: 0.5}}}
"""


@pytest.mark.parametrize("name", ["happy", "bad-version", "no-data", "flaky-platform"])
def test_every_shipped_scenario_loads_with_the_crm_sync_fleet(name):
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    tenants = scenario.build_tenants()
    assert scenario.plugin == "crm-sync"
    assert {t.version for t in tenants} == {"2.3.1"}
    assert Counter(t.labels["tier"] for t in tenants[:60]) == {
        "gold": 12,
        "silver": 18,
        "bronze": 30,
    }
    assert tenants[-1].id == "t-internal-1"


def test_bad_version_scenario_is_case_b_bronze_on_2_5_0_above_five_percent():
    scenario = load_scenario(SCENARIOS / "bad-version.yaml")
    [fault] = scenario.faults
    assert isinstance(fault, ErrorRateFault)
    assert (fault.version, fault.where, fault.value) == ("2.5.0", {"tier": "bronze"}, 0.09)
    assert scenario.versions["2.4.0"].error_rate == 0.012


def test_generated_fleet_ids_are_zero_padded_and_labels_follow_the_shares_exactly():
    tenants = parse_scenario(BASE).build_tenants()
    assert [t.id for t in tenants[:3]] == ["t-0001", "t-0002", "t-0003"]
    assert tenants[41].id == "t-0042"
    again = parse_scenario(BASE).build_tenants()
    assert [t.labels for t in again] == [t.labels for t in tenants]
    other_seed = parse_scenario(BASE.replace("seed: 42", "seed: 43")).build_tenants()
    assert [t.labels for t in other_seed] != [t.labels for t in tenants]
    assert Counter(t.labels["tier"] for t in other_seed) == {"gold": 12, "silver": 18, "bronze": 30}


def test_a_ten_thousand_tenant_fleet_keeps_four_digit_ids_and_stays_unique():
    text = BASE.replace("count: 60", "count: 10000")
    tenants = parse_scenario(text).build_tenants()
    ids = [t.id for t in tenants]
    assert len(set(ids)) == 10_000 and ids[9998:] == ["t-9999", "t-10000"]
    assert Counter(t.labels["tier"] for t in tenants)["gold"] == 2000


def test_explicit_tenant_list_is_taken_as_written():
    scenario = parse_scenario(
        "plugin: crm-sync\n"
        "tenants:\n"
        "  - {id: acme, labels: {tier: gold}, version: 2.3.1, config_version: c-7}\n"
        "  - {id: globex, version: 2.2.0}\n"
    )
    tenants = scenario.build_tenants()
    assert [(t.id, t.version, t.config_version) for t in tenants] == [
        ("acme", "2.3.1", "c-7"),
        ("globex", "2.2.0", "cfg-1"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE + "faults:\n  - {type: error_rate, value: 0.1}\n  - {type: signal_delay, "
            "value: 5s}\n  - {type: latancy, value: 3}\n",
            "bad.yaml:8 faults[2].type: unknown fault type 'latancy' (allowed: error_rate, "
            "latency, metrics_gap, signal_delay, deploy_failure, http_error, timeout, in_flight, audit_outage)",
        ),
        (
            BASE + "faults:\n  - {type: error_rate, version: 2.5, value: 0.1}\n",
            "bad.yaml:6 faults[0].version: expected text, got the number 2.5",
        ),
        (
            BASE + "versions:\n  2.4.0:\n    error_rate: lots\n",
            "bad.yaml:7 versions['2.4.0'].error_rate: Input should be a valid number",
        ),
        (
            BASE + "traffic: {rps: 20, eror_rate: 0.1}\n",
            "bad.yaml:5 traffic.eror_rate: unknown field (check the spelling)",
        ),
        (
            BASE + "faults:\n  - {type: deploy_failure, tenants: [t-0007, t-0700]}\n",
            "bad.yaml:6 faults[0].tenants[1]: unknown tenant 't-0700'",
        ),
        (
            BASE + "faults:\n  - type: error_rate\n    where: {tier: bronz}\n    value: 0.2\n",
            "bad.yaml:7 faults[0].where.tier: no tenant has label tier=bronz",
        ),
        (
            BASE + "faults:\n  - {type: metrics_gap}\n",
            "bad.yaml:6 faults[0]: a metrics_gap needs `after` and/or `duration`",
        ),
        (
            BASE + "faults:\n  - {type: signal_delay, value: soon}\n",
            "bad.yaml:6 faults[0].value: invalid duration 'soon'",
        ),
        (
            BASE.replace("bronze: 0.5", "bronze: 0.4"),
            "bad.yaml:4 tenants.labels: shares of label 'tier' sum to 0.9, not 1",
        ),
        (BASE.replace("plugin: crm-sync\n", ""), "bad.yaml:1 plugin: required field is missing"),
        (BASE + "seed: 1\n", "bad.yaml:5: invalid YAML: duplicate key 'seed' (first at line 1)"),
        (BASE + "faults: [\n", "bad.yaml:6: invalid YAML:"),
        ("- 1\n- 2\n", "bad.yaml:1: a scenario is a mapping"),
        (
            "plugin: crm-sync\ntenants:\n  - {id: a, version: 2.3.1}\n  - {id: b}\n",
            "bad.yaml:4 tenants[1].version: required field is missing",
        ),
        (
            "plugin: crm-sync\ntenants:\n  - {id: a, version: 2.3.1}\n  - {id: a, version: 2.3.1}\n",
            "bad.yaml:4 tenants[1].id: duplicate tenant id 'a'",
        ),
        (
            BASE + "latency: {upgrade_ms: -5}\n",
            "bad.yaml:5 latency.upgrade_ms: Input should be greater than or equal to 0",
        ),
    ],
)
def test_invalid_scenarios_name_file_line_and_field_path(text, expected):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "bad.yaml")
    assert str(caught.value).startswith(expected), str(caught.value)


def test_every_problem_of_a_file_is_reported_in_line_order(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(
        BASE + "latency: {upgrade_ms: x}\nfaults:\n  - {type: timeout, endpoint: upgrde}\n"
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    lines = [(p.line, p.path) for p in caught.value.problems]
    assert lines == [(5, "latency.upgrade_ms"), (7, "faults[0].endpoint")]
    assert str(caught.value).splitlines()[0].startswith(f"{path}:5 latency.upgrade_ms:")


def test_a_missing_file_is_a_scenario_error_not_a_traceback(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.yaml")
