"""The plain DAG description of a plan: groups, tasks, edges and trigger rules, without Airflow."""

from __future__ import annotations

import itertools

import pytest

from powerx_upgrade.config import load_config
from powerx_upgrade.orchestration.description import approval_batches, describe_plan
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def plans():
    return load_config([CONFIG_DIR]).plans


def test_one_group_per_batch_plus_preflight_rollback_finalize(plans):
    shape = describe_plan(plans["crm-sync-standard"])
    groups = {n.group for n in shape.nodes}
    assert groups == {
        "preflight",
        "batch_1",
        "batch_2",
        "batch_3",
        "batch_4",
        "rollback",
        "finalize",
    }
    assert shape.dag_id == "plugin_upgrade__crm-sync-standard"
    assert shape.schedule == "0 2 * * SAT" and shape.timezone == "Asia/Shanghai"
    assert set(shape.tags) == {"grey-upgrade", "plugin:crm-sync", "policy:standard-grey"}


def test_preflight_reads_like_the_design(plans):
    shape = describe_plan(plans["crm-sync-standard"])
    order = [
        "preflight.validate",
        "preflight.verify_artifact",
        "preflight.plan",
        "preflight.begin",
    ]
    for upstream, downstream in itertools.pairwise(order):
        assert (upstream, downstream) in shape.edges
    assert set(shape.branch_targets["preflight.begin"]) == {"batch_1.start", "preflight.dry_run"}
    # four hops, not eight: window, subscribe, baseline, announce and the dry-run branch are one
    assert sorted(n.task_id for n in shape.nodes if n.task_id.startswith("preflight.")) == sorted(
        [*order, "preflight.dry_run"]
    )


def test_the_artifact_is_verified_after_validate_and_before_any_tenant_is_fetched(plans):
    shape = describe_plan(plans["crm-sync-standard"])
    assert shape.upstream("preflight.verify_artifact") == ["preflight.validate"]
    assert shape.downstream("preflight.verify_artifact") == ["preflight.plan"]
    assert shape.upstream("preflight.plan") == ["preflight.verify_artifact"]
    node = shape.node("preflight.verify_artifact")
    assert node.kind == "verify_artifact" and node.trigger_rule == "all_success"


def test_each_batch_deploys_gates_and_decides(plans):
    shape = describe_plan(plans["crm-sync-standard"])
    assert shape.node("batch_2.deploy").mapped_over == "batch_2.shards"  # batch 2: approval
    # without an approval step, start cuts the shards itself: one hop less per batch
    assert shape.node("batch_4.deploy").mapped_over == "batch_4.start"
    assert shape.node("batch_4.start").kind == "start_shards"
    assert "batch_4.shards" not in {n.task_id for n in shape.nodes}
    assert ("batch_2.deploy", "batch_2.gate") in shape.edges
    assert ("batch_2.gate", "batch_2.decide") in shape.edges
    assert set(shape.branch_targets["batch_2.decide"]) == {
        "batch_2.promote",
        "batch_2.rollback",
        "batch_2.pause",
    }
    assert set(shape.branch_targets["batch_2.pause"]) == {
        "batch_2.resume",
        "batch_2.pause_rollback",
        "batch_2.pause_stop",
    }
    assert ("batch_2.promote", "batch_3.start") in shape.edges
    assert ("batch_4.promote", "finalize.record") in shape.edges


def test_branch_targets_are_never_shared_between_branches(plans):
    # A branch skips its unchosen direct downstream tasks: a target of two branches would be
    # skipped by the first branch before the second could choose it.
    shape = describe_plan(plans["crm-sync-standard"])
    owners: dict[str, str] = {}
    for branch, targets in shape.branch_targets.items():
        for target in targets:
            assert target not in owners, (
                f"{target} is a target of {owners.get(target)} and {branch}"
            )
            owners[target] = branch
    for branch, targets in shape.branch_targets.items():
        assert set(shape.downstream(branch)) == set(targets)


def test_joins_use_trigger_rules_that_survive_branch_skips(plans):
    shape = describe_plan(plans["crm-sync-standard"])
    assert shape.node("batch_3.start").trigger_rule == "none_failed_min_one_success"
    assert shape.node("rollback.scope").trigger_rule == "none_failed_min_one_success"
    assert shape.node("batch_3.gate").trigger_rule == "none_skipped"  # runs after failed deploys
    assert shape.node("finalize.record").trigger_rule == "all_done"  # every outcome
    upstream_of_scope = set(shape.upstream("rollback.scope"))
    assert upstream_of_scope == {
        f"batch_{k}.{t}" for k in range(1, 5) for t in ("rollback", "pause_rollback")
    }


def test_every_path_ends_in_finalize(plans):
    shape = describe_plan(plans["crm-sync-standard"])
    leaves = {n.task_id for n in shape.nodes if not shape.downstream(n.task_id)}
    assert leaves == {"finalize.result"}


def test_the_report_renders_between_record_and_result_on_every_outcome(plans):
    shape = describe_plan(plans["crm-sync-standard"])
    assert ("finalize.record", "finalize.report") in shape.edges
    assert ("finalize.report", "finalize.result") in shape.edges
    assert ("finalize.record", "finalize.result") not in shape.edges
    assert shape.node("finalize.report").trigger_rule == "all_done"  # even if record failed


def test_approval_tasks_sit_where_an_approval_can_land(plans):
    standard = plans["crm-sync-standard"]  # batch 3 of 4 requires approval
    assert approval_batches(standard) == {1, 2, 3}
    shape = describe_plan(standard)
    assert "batch_3.approve" in {n.task_id for n in shape.nodes}
    assert "batch_4.approve" not in {n.task_id for n in shape.nodes}
    assert set(shape.branch_targets["batch_3.approve"]) == {"batch_3.shards", "batch_3.rejected"}
    assert approval_batches(plans["crm-sync-bronze"]) == set()


def test_doc_md_carries_the_plan_and_its_source(plans):
    shape = describe_plan(plans["crm-sync-standard"])
    assert "crm-sync-standard" in shape.doc_md
    assert "include/config/upgrade_policies.yaml:" in shape.doc_md
    assert "| 3 | half | 50% | 30m | required |" in shape.doc_md
