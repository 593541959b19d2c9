"""The policy engine: validation, located problems, overrides, and the committed schema."""

from __future__ import annotations

import json
import textwrap

import jsonschema
import pytest

from powerx_upgrade.domain.config import config_schema, deep_merge, parse_config
from powerx_upgrade.domain.yaml_source import parse_yaml
from tests.conftest import CONFIG_DIR, EXAMPLE_POLICIES

pytestmark = pytest.mark.unit

POLICY = """
version: 1
policies:
  std:
    batches:
      - {name: canary, ratio: 0.1, bake: 10m}
      - {ratio: 1.0, bake: 10m}
    gate:
      checks:
        - {metric: error_rate, op: "<=", limit: 0.05}
"""


def parse(text: str, name: str = "upgrade_policies.yaml"):
    return parse_config([(name, textwrap.dedent(text).lstrip("\n"))])


def only(problems, **match):
    found = [p for p in problems if all(getattr(p, k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one problem matching {match}, got {problems}"
    return found[0]


def test_example_config_validates_with_three_plans_and_no_problems():
    result = parse_config([(str(EXAMPLE_POLICIES), EXAMPLE_POLICIES.read_text())])
    assert result.problems == []
    assert set(result.plans) == {"crm-sync-standard", "crm-sync-bronze", "billing-export-cautious"}
    assert len(result.policies) >= 2
    standard = result.plans["crm-sync-standard"]
    assert [b.ratio for b in standard.policy.batches] == [0.01, 0.10, 0.50, 1.0]
    assert standard.policy.batches[2].approval == "required"
    assert (
        standard.source.line
        == EXAMPLE_POLICIES.read_text().splitlines().index("  crm-sync-standard:") + 1
    )


def test_three_mistakes_are_all_reported_with_line_and_field_path():
    result = parse(
        POLICY
        + """
plans:
  crm-sync:
    plugin: crm-sync
    policy: standrad-grey
  billing:
    plugin: billing
    policy: std
    tenants: {select: {tier: gold}, canary: [t-1], exclude: [t-2]}
    window: {schedule: "0 2 * * SAT", duration: 4h, timezone: Asia/Shanghay}
  ledger:
    plugin: ledger
    policy: std
    owner: [me@example.com]
"""
    )
    assert len(result.errors) == 3
    unknown = only(result.problems, path="plans.crm-sync.policy")
    assert unknown.line == 14
    assert "unknown policy 'standrad-grey' (known: std)" in unknown.message
    zone = only(result.problems, path="plans.billing.window.timezone")
    assert zone.line == 19 and "Asia/Shanghay" in zone.message
    extra = only(result.problems, path="plans.ledger.owner")
    assert extra.line == 23
    assert "unknown field 'owner'" in extra.message and "did you mean 'owners'" in extra.message
    assert "allowed: description, plugin, policy" in extra.message
    assert str(unknown).startswith("upgrade_policies.yaml:14: error: plans.crm-sync.policy: ")
    assert {p.plan_id for p in result.errors} == {"crm-sync", "billing", "ledger"}


def test_an_invalid_plan_never_hides_the_valid_ones():
    result = parse(
        POLICY
        + """
plans:
  good:
    plugin: crm-sync
    policy: std
  bad:
    plugin: crm-sync
    policy: std
    target_version: [not, a, version]
"""
    )
    assert set(result.plans) == {"good"}
    assert set(result.invalid_plans) == {"bad"}
    assert result.invalid_plans["bad"].line == 15
    assert only(result.errors, path="plans.bad.target_version").line == 18


def test_unknown_policy_suggests_the_closest_name():
    result = parse(POLICY + "plans:\n  p: {plugin: x, policy: sdt}\n")
    assert "did you mean 'std'?" in only(result.errors).message


def test_yaml_syntax_error_names_the_line_and_other_files_still_load():
    result = parse_config(
        [
            ("upgrade_policies.yaml", textwrap.dedent(POLICY)),
            ("plans/broken.yaml", "plans:\n  p1: {plugin: x, policy: std\n  p2: 3\n"),
            ("plans/fine.yaml", "plans:\n  p3: {plugin: x, policy: std}\n"),
        ]
    )
    broken = only(result.problems, file="plans/broken.yaml")
    assert broken.line is not None and "invalid YAML" in broken.message
    assert set(result.plans) == {"p3"}


def test_duplicate_key_in_one_file_is_an_error_with_both_lines():
    result = parse(
        POLICY
        + """
plans:
  p:
    plugin: crm-sync
    policy: std
  p:
    plugin: crm-sync
    policy: std
"""
    )
    problem = only(result.errors, path="plans.p")
    assert problem.line == 15 and "first at line 12" in problem.message
    assert "p" not in result.plans


def test_duplicate_plan_id_across_files_disables_both_definitions():
    result = parse_config(
        [
            (
                "upgrade_policies.yaml",
                textwrap.dedent(POLICY) + "plans:\n  p: {plugin: a, policy: std}\n",
            ),
            ("plans/other.yaml", "plans:\n  p: {plugin: b, policy: std}\n"),
        ]
    )
    assert "p" not in result.plans
    files = {p.file for p in result.errors if p.path == "plans.p"}
    assert files == {"upgrade_policies.yaml", "plans/other.yaml"}
    assert all("duplicate plan id 'p'" in p.message for p in result.errors)


@pytest.mark.parametrize(
    ("batches", "path", "fragment"),
    [
        (
            "[{ratio: 0.5, bake: 10m}, {ratio: 0.2, bake: 10m}, {ratio: 1.0, bake: 10m}]",
            "policies.std.batches[1].ratio",
            "strictly increase",
        ),
        (
            "[{ratio: 0.1, bake: 10m}, {ratio: 0.6, bake: 10m}]",
            "policies.std.batches[1].ratio",
            "not 1.0",
        ),
        (
            "[{ratio: 1.0, bake: 10m}, {ratio: 1.0, bake: 10m}]",
            "policies.std.batches[1]",
            "already reaches ratio 1.0",
        ),
        ("[{ratio: 1.5, bake: 10m}]", "policies.std.batches[0].ratio", "at most 1.0"),
        (
            "[{ratio: 0.5, count: 3, bake: 10m}, {ratio: 1.0, bake: 1m}]",
            "policies.std.batches[0]",
            "exactly one",
        ),
        (
            "[{ratio: 1.0, bake: 10 min}]",
            "policies.std.batches[0].bake",
            "invalid duration '10 min'",
        ),
        (
            "[{count: 5, bake: 10m}, {count: 5, bake: 10m}, {ratio: 1.0, bake: 1m}]",
            "policies.std.batches[1].count",
            "strictly increase",
        ),
        (
            "[{name: a, ratio: 0.5, bake: 10m}, {name: a, ratio: 1.0, bake: 10m}]",
            "policies.std.batches[1].name",
            "duplicate batch name",
        ),
        ("[]", "policies.std.batches", "at least 1"),
    ],
)
def test_batch_mistakes_name_the_exact_field(batches, path, fragment):
    text = POLICY.replace(
        "    batches:\n      - {name: canary, ratio: 0.1, bake: 10m}\n      - {ratio: 1.0, bake: 10m}\n",
        f"    batches: {batches}\n",
    )
    result = parse(text)
    problem = only(result.errors, path=path)
    assert fragment in problem.message
    assert problem.line == 4
    assert "std" not in result.policies


def test_ratios_accept_percentages_and_counts_are_cumulative():
    result = parse(POLICY.replace("ratio: 0.1", "ratio: 10%"))
    assert result.policies["std"].batches[0].ratio == pytest.approx(0.1)


def test_bake_shorter_than_two_polls_plus_signal_delay_is_a_warning_not_an_error():
    result = parse(
        POLICY.replace(
            "{name: canary, ratio: 0.1, bake: 10m}", "{name: canary, ratio: 0.1, bake: 1m}"
        )
    )
    warning = only(result.problems, path="policies.std.batches[0].bake")
    assert (
        warning.severity == "warning"
        and "shorter than signal_delay + 2 x poke_interval = 2m" in warning.message
    )
    assert "std" in result.policies


def test_relative_limit_needs_a_baseline():
    result = parse(POLICY.replace("limit: 0.05}", "limit: +20%}"))
    problem = only(result.errors, path="policies.std.gate.checks[0].baseline")
    assert "pre_upgrade or control" in problem.message and problem.line == 9


def test_max_breaching_tenants_needs_per_tenant_scope():
    result = parse(POLICY.replace("limit: 0.05}", "limit: 0.05, max_breaching_tenants: 2}"))
    assert "only applies to scope per_tenant" in only(result.errors).message


def test_wrong_literal_lists_what_is_allowed():
    result = parse(POLICY + "    rollback: {mode: automatic}\n")
    problem = only(result.errors, path="policies.std.rollback.mode")
    assert (
        "'automatic' is not allowed" in problem.message and "'auto' or 'manual'" in problem.message
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [("'2%'", "2%"), ("3", 3), ("'0%'", "0%")],
)
def test_max_failed_reads_a_share_or_a_count(value, expected):
    result = parse(POLICY + f"    deploy: {{max_failed: {value}}}\n")
    assert result.policies["std"].deploy.max_failed.model_dump() == expected


def test_max_failed_share_floors_the_tolerated_failures():
    result = parse(POLICY + "    deploy: {max_failed: '5%'}\n")
    budget = result.policies["std"].deploy.max_failed
    assert [budget.allowed_failures(n) for n in (10, 19, 20, 100)] == [0, 0, 1, 5]


def test_bad_max_failed_is_explained():
    result = parse(POLICY + "    deploy: {max_failed: lots}\n")
    assert "count like 3 or a percentage like '2%'" in only(result.errors).message


def test_overrides_deep_merge_onto_the_policy():
    result = parse(
        POLICY
        + """
    deploy: {concurrency: 20, retries: 3}
plans:
  p:
    plugin: x
    policy: std
    overrides:
      deploy: {concurrency: 5}
      gate: {poke_interval: 10s}
"""
    )
    policy = result.plans["p"].policy
    assert policy.deploy.concurrency == 5 and policy.deploy.retries == 3
    assert policy.gate.poke_interval.total_seconds() == 10
    assert policy.gate.checks[0].metric == "error_rate"
    assert result.policies["std"].deploy.concurrency == 20


def test_bad_override_is_reported_under_the_plans_overrides():
    result = parse(
        POLICY
        + """
plans:
  p:
    plugin: x
    policy: std
    overrides:
      rollback: {scope: everything}
"""
    )
    problem = only(result.errors, path="plans.p.overrides.rollback.scope")
    assert problem.line == 16 and "failed_tenants" in problem.message
    assert "p" in result.invalid_plans


def test_plan_on_an_invalid_policy_points_at_the_policy():
    result = parse(
        POLICY.replace("limit: 0.05", "limit: lots") + "plans:\n  p: {plugin: x, policy: std}\n"
    )
    problem = only(result.errors, path="plans.p.policy")
    assert "policy 'std' has errors (see upgrade_policies.yaml:3)" in problem.message


@pytest.mark.parametrize(
    ("window", "path", "fragment"),
    [
        ("{schedule: '0 25 * * *', duration: 1h}", "plans.p.window.schedule", "invalid cron"),
        (
            "{schedule: '0 2 * * *', duration: 1h, freeze: ['2026-12-24/2026-12-26', '2026-12-26/2026-12-20']}",
            "plans.p.window.freeze[1]",
            "not after the start",
        ),
        (
            "{schedule: '0 2 * * *', duration: 1h, freeze: ['christmas']}",
            "plans.p.window.freeze[0]",
            "START/END",
        ),
        ("{schedule: '0 2 * * *', duration: 0s}", "plans.p.window.duration", "longer than 0s"),
        ("{schedule: '0 2 * * *'}", "plans.p.window.duration", "required field is missing"),
    ],
)
def test_window_mistakes_name_the_field(window, path, fragment):
    result = parse(POLICY + f"plans:\n  p:\n    plugin: x\n    policy: std\n    window: {window}\n")
    assert fragment in only(result.errors, path=path).message


def test_canary_tenant_cannot_also_be_excluded():
    result = parse(
        POLICY
        + "plans:\n  p:\n    plugin: x\n    policy: std\n    tenants: {canary: [t-1], exclude: [t-1]}\n"
    )
    assert "cannot be both" in only(result.errors, path="plans.p.tenants.canary[0]").message


def test_union_errors_are_folded_into_one_message():
    result = parse(
        POLICY + "plans:\n  p:\n    plugin: x\n    policy: std\n    tenants: {exclude: [5]}\n"
    )
    problem = only(result.errors)
    assert problem.path == "plans.p.tenants.exclude[0]"
    assert problem.message.count("(got 5)") == 1


def test_unknown_top_level_key_and_unsupported_version():
    result = parse("version: 2\nplans: {}\n")
    assert "unsupported version 2" in only(result.errors, path="version").message
    result = parse(POLICY + "policy: {}\nx-defaults: &d {bake: 10m}\n")
    assert "unknown top-level key 'policy'" in only(result.errors).message


def test_yaml_12_booleans_keep_on_and_no_as_strings():
    source = parse_yaml("on: [no, yes, off]\nflag: true\n", "f.yaml")
    assert source.data == {"on": ["no", "yes", "off"], "flag": True}


def test_missing_field_points_at_the_enclosing_line():
    result = parse(POLICY + "plans:\n  p:\n    policy: std\n")
    problem = only(result.errors, path="plans.p.plugin")
    assert problem.line == 11 and problem.message == "required field is missing"


def test_deep_merge_merges_mappings_and_replaces_lists():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merged = deep_merge(base, {"a": {"c": [3]}, "e": 2})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_committed_schema_matches_the_models_and_accepts_the_example():
    committed = json.loads((CONFIG_DIR / "upgrade_policies.schema.json").read_text())
    assert committed == json.loads(json.dumps(config_schema())), (
        "schema drifted: run `powerx plan schema --output include/config/upgrade_policies.schema.json`"
    )
    data = parse_yaml(EXAMPLE_POLICIES.read_text(), "example").data
    jsonschema.validate(data, committed)
    assert EXAMPLE_POLICIES.read_text().startswith(
        "# yaml-language-server: $schema=./upgrade_policies.schema.json"
    )
