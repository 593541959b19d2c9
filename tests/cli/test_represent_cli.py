"""`powerx plan validate|preview` and tenants.represent: the segments of each batch, the warnings."""

from __future__ import annotations

import json

import pytest

from powerx_upgrade.cli import plan as plan_cli
from powerx_upgrade.cli.main import main

pytestmark = pytest.mark.unit

CONFIG = """
version: 1
policies:
  grey:
    batches:
      - {name: canary, count: 3, bake: 10m}
      - {ratio: 1.0, bake: 10m}
    gate:
      checks:
        - {metric: error_rate, op: "<=", limit: 0.05}
plans:
  ordered:
    plugin: crm-sync
    policy: grey
    tenants:
      select: {tier: [gold, silver, bronze]}
      order: [{label: tier, values: [gold, silver, bronze]}]
  represented:
    plugin: crm-sync
    policy: grey
    tenants:
      select: {tier: [gold, silver, bronze]}
      order: [{label: tier, values: [gold, silver, bronze]}]
      represent: {by: [tier]}
  declared:
    plugin: crm-sync
    policy: grey
    tenants:
      order: [{label: tier, values: [gold, silver, bronze]}]
      represent: {by: [tier], through_batch: 0}
  intended:
    plugin: crm-sync
    policy: grey
    tenants:
      order: [{label: tier, values: [gold, silver, bronze]}]
      represent: {by: [tier], through_batch: 0, intended_gaps: true}
"""

TENANTS = [
    {"id": f"t-{i:02d}", "labels": {"tier": tier}}
    for i, tier in enumerate(["gold"] * 4 + ["silver"] * 3 + ["bronze"] * 3, start=1)
]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def files(write):
    return write("upgrade_policies.yaml", CONFIG), write("tenants.json", json.dumps(TENANTS))


def test_validate_warns_at_the_order_and_at_a_through_batch_of_zero_naming_segments(capsys, files):
    config, _ = files
    code, out, _ = run(capsys, "plan", "validate", str(config))
    assert code == 0
    warnings = [line for line in out.splitlines() if ": warning: " in line]
    assert warnings == [
        f"{config}:16: warning: plans.ordered.tenants.order[0]: batch 1 takes tenants in the "
        "order of tier (tier=gold first): it can leave out tier=silver, tier=bronze, and a "
        "failure only they see is then found in a later batch; add tenants.represent: {by: "
        "[tier]} (or, if that is intended, {by: [tier], through_batch: 0, intended_gaps: "
        "true})",
        f"{config}:29: warning: plans.declared.tenants.represent.through_batch: through_batch 0 "
        "stratifies no batch: batch 1 may leave segments of tier out; set through_batch: 1, or "
        "intended_gaps: true if that is intended",
    ]
    assert out.splitlines()[-1] == (
        "valid: 1 file(s), 4 valid plan(s), 1 policies; 0 error(s), 2 warning(s)"
    )


def test_validate_json_gives_the_warning_with_file_line_and_path(capsys, files):
    config, _ = files
    code, out, _ = run(capsys, "plan", "validate", str(config), "--format", "json")
    problems = json.loads(out)["problems"]
    assert code == 0
    assert [(p["line"], p["severity"], p["path"], p["plan_id"]) for p in problems] == [
        (16, "warning", "plans.ordered.tenants.order[0]", "ordered"),
        (29, "warning", "plans.declared.tenants.represent.through_batch", "declared"),
    ]


def preview_json(capsys, config, tenants, plan_id: str) -> dict:
    code, out, err = run(
        capsys,
        "plan",
        "preview",
        plan_id,
        "--tenants",
        str(tenants),
        "--config",
        str(config),
        "--format",
        "json",
        "--now",
        "2026-11-27T12:00:00+00:00",
    )
    assert code == 0, err
    return json.loads(out)


def test_preview_json_gives_each_batch_its_segments_and_the_gaps(capsys, files):
    ordered = preview_json(capsys, *files, "ordered")
    assert [b["segments"] for b in ordered["batches"]] == [
        {"tier=gold": 3},
        {"tier=bronze": 3, "tier=gold": 1, "tier=silver": 3},
    ]
    assert ordered["segment_labels"] == ["tier"]
    assert ordered["segments"] == {"tier=bronze": 3, "tier=gold": 4, "tier=silver": 3}
    assert ordered["gaps"] == [
        {
            "batch": 1,
            "segment": "tier=bronze",
            "reason": "batch 1 is filled in the plan's order; tenants.represent is not set",
        },
        {
            "batch": 1,
            "segment": "tier=silver",
            "reason": "batch 1 is filled in the plan's order; tenants.represent is not set",
        },
    ]
    represented = preview_json(capsys, *files, "represented")
    assert [b["segments"] for b in represented["batches"]] == [
        {"tier=bronze": 1, "tier=gold": 1, "tier=silver": 1},
        {"tier=bronze": 2, "tier=gold": 3, "tier=silver": 2},
    ]
    assert represented["gaps"] == [] and represented["warnings"] == []
    assert preview_json(capsys, *files, "intended")["warnings"] == []


def test_preview_table_shows_segments_per_batch_and_warns_about_batch_one(
    capsys, files, monkeypatch
):
    config, tenants = files
    monkeypatch.setattr(plan_cli.console, "width", 140)  # one line per row, whatever the terminal
    code, out, _ = run(
        capsys,
        "plan",
        "preview",
        "ordered",
        "--tenants",
        str(tenants),
        "--config",
        str(config),
        "--now",
        "2026-11-27T12:00:00+00:00",
    )
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert rows == [
        "│ 1 │ canary  │       3 │ 3 (30%)    │ 10m  │ -        │ gold 3; no bronze, silver  │ "
        "t-03, t-02, t-01     │",
        "│ 2 │ batch_2 │       7 │ 10 (100%)  │ 10m  │ -        │ bronze 3, gold 1, silver 3 │ "
        "t-04, t-06, t-07 ... │",
    ]
    assert "segments (tier)" in out
    assert out.splitlines()[-2:] == [
        f"warning: {config}:11: plans.ordered.tenants: batch 1 leaves out tier=bronze: batch 1 "
        "is filled in the plan's order; tenants.represent is not set",
        f"warning: {config}:11: plans.ordered.tenants: batch 1 leaves out tier=silver: batch 1 "
        "is filled in the plan's order; tenants.represent is not set",
    ]
