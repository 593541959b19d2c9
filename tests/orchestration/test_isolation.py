"""Issue 15: one bad file under plans/ never takes the others down. Every hostile file of
tests/hostile.py sits beside a good plan in one config; a real DagBag over dags/ keeps every
valid plan's DAG and the rollback DAG, and shows each bad file (or its plan) as a broken DAG
that names it."""

from __future__ import annotations

import shutil

import pytest
from airflow.dag_processing.dagbag import DagBag

from powerx_upgrade.config import load_config
from powerx_upgrade.domain.config import ConfigResult
from powerx_upgrade.orchestration.factory import build_dags
from tests.conftest import EXAMPLE_POLICIES, ROOT
from tests.hostile import GOOD_PLAN, HOSTILE_FILES, write_unreadable

pytestmark = pytest.mark.dags

EXAMPLE_PLANS = {"crm-sync-standard", "crm-sync-bronze", "billing-export-cautious"}
PLAN_LEVEL = {  # files whose problem belongs to their plan: the plan's DAG is the broken one
    "ratio_1e400_override",
    "long_timezone",
    "timezone_path",
}


@pytest.fixture
def hostile_config(tmp_path):
    plans = tmp_path / "plans"
    plans.mkdir()
    shutil.copy(EXAMPLE_POLICIES, tmp_path / "upgrade_policies.yaml")
    (plans / "good.yaml").write_bytes(GOOD_PLAN)
    for name, content in HOSTILE_FILES.items():
        (plans / f"{name}.yaml").write_bytes(content)
    unreadable = write_unreadable(plans)
    return tmp_path, unreadable


def test_every_hostile_file_is_its_own_problem(hostile_config):
    config_dir, unreadable = hostile_config
    result = load_config([config_dir])
    assert set(result.plans) == EXAMPLE_PLANS | {"good-plan"}
    files_with_errors = {p.file.rsplit("/", 1)[-1] for p in result.errors}
    expected = {f"{name}.yaml" for name in HOSTILE_FILES} | set(unreadable)
    assert files_with_errors == expected
    for problem in result.errors:
        assert problem.message, problem
    by_file = {p.file.rsplit("/", 1)[-1]: p for p in result.errors}
    assert "not UTF-8" in by_file["non_utf8.yaml"].message
    assert by_file["non_utf8.yaml"].line == 3
    assert "U+0000" in by_file["nul.yaml"].message and by_file["nul.yaml"].line == 3
    assert "recursive" in by_file["recursive_alias.yaml"].message
    assert "deeper than 50" in by_file["deep_flow.yaml"].message
    assert "too long" in by_file["huge_int.yaml"].message
    assert "out of range" in by_file["ratio_overflow.yaml"].message
    assert "unknown time zone of 5,000 characters" in by_file["long_timezone.yaml"].message
    assert "over 100,000 values" in by_file["alias_bomb.yaml"].message
    # libyaml refuses the escape itself; the Python loader names the lone surrogate
    assert any(
        text in by_file["lone_surrogate.yaml"].message
        for text in ("lone surrogate", "invalid Unicode character escape")
    )
    assert "cannot read the file" in by_file["dangling_symlink.yaml"].message
    assert "cannot read the file" in by_file["directory.yaml"].message
    assert "262,144" in by_file["too_large.yaml"].message


def test_a_real_dagbag_keeps_the_good_dags_and_shows_each_bad_file(monkeypatch, hostile_config):
    config_dir, unreadable = hostile_config
    monkeypatch.setenv("POWERX_UPGRADE_CONFIG", str(config_dir))
    dagbag = DagBag(dag_folder=str(ROOT / "dags"))
    assert dagbag.import_errors == {}
    ids = set(dagbag.dag_ids)
    assert {f"plugin_upgrade__{plan}" for plan in EXAMPLE_PLANS | {"good-plan"}} <= ids
    assert "plugin_upgrade_rollback" in ids
    assert "invalid-plan" not in dagbag.dags["plugin_upgrade__good-plan"].tags
    for name in [*HOSTILE_FILES, *(u.removesuffix(".yaml") for u in unreadable)]:
        if name in PLAN_LEVEL:
            continue  # its plan (hostile-plan) is the broken DAG: below
        dag = dagbag.dags[f"plugin_upgrade__config_error__{name}.yaml"]
        assert "invalid-plan" in dag.tags
        assert f"plans/{name}.yaml" in dag.doc_md
    hostile_plan = dagbag.dags["plugin_upgrade__hostile-plan"]
    assert "invalid-plan" in hostile_plan.tags
    for name in PLAN_LEVEL:
        assert f"plans/{name}.yaml:" in hostile_plan.doc_md


def test_the_loader_survives_a_config_that_cannot_be_found(monkeypatch, tmp_path):
    monkeypatch.setenv("POWERX_UPGRADE_CONFIG", str(tmp_path / "gone"))
    dags = build_dags()
    assert "plugin_upgrade_rollback" in dags
    broken = dags["plugin_upgrade__config_error__config"]
    assert "gone" in broken.doc_md and "does not exist" in broken.doc_md


def test_a_plan_whose_dag_cannot_be_built_is_broken_alone(monkeypatch):
    from powerx_upgrade.orchestration import factory

    config = load_config([EXAMPLE_POLICIES])
    real = factory.materialise

    def fails_for_one(shape, plan):
        if plan.id == "crm-sync-bronze":
            raise RuntimeError("boom in materialise")
        return real(shape, plan)

    monkeypatch.setattr(factory, "materialise", fails_for_one)
    dags = build_dags(config)
    assert "invalid-plan" in dags["plugin_upgrade__crm-sync-bronze"].tags
    assert "RuntimeError: boom in materialise" in dags["plugin_upgrade__crm-sync-bronze"].doc_md
    assert "invalid-plan" not in dags["plugin_upgrade__crm-sync-standard"].tags
    assert "plugin_upgrade_rollback" in dags


def test_config_error_dag_ids_are_safe_and_distinct():
    from powerx_upgrade.domain.problems import Problem

    names = ["plans/" + "x" * 300 + ".yaml", "plans/caf\\xe9.yaml", "plans/caf_.yaml"]
    result = ConfigResult(problems=[Problem(n, 1, "error", "", "bad") for n in names])
    dags = build_dags(result)
    broken = [d for d in dags if "config_error__" in d]
    assert len(broken) == 3
    assert all(len(d) <= 250 for d in broken)
