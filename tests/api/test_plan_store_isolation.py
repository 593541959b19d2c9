"""Issue 15: one unreadable file under plans/ does not make POST /plan fail for every plan: the
store validates a new plan beside it (the bad file is its own problem, not an exception)."""

from __future__ import annotations

import shutil

import pytest

from powerx_upgrade.api.plans import PlanStore, plan_text
from tests.conftest import EXAMPLE_POLICIES
from tests.hostile import HOSTILE_FILES

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["non_utf8", "nul", "recursive_alias", "too_large"])
def test_a_bad_sibling_file_does_not_stop_another_plan(tmp_path, name):
    (tmp_path / "plans").mkdir()
    shutil.copy(EXAMPLE_POLICIES, tmp_path / "upgrade_policies.yaml")
    (tmp_path / "plans" / f"{name}.yaml").write_bytes(HOSTILE_FILES[name])
    store = PlanStore(tmp_path)
    text = plan_text("fresh", {"plugin": "crm-sync", "policy": "standard-grey"})
    validation = store.validate("fresh", text)
    assert validation.plan is not None and validation.errors == []


def test_a_lone_surrogate_in_a_posted_plan_is_refused_not_written(tmp_path):
    (tmp_path / "plans").mkdir()
    shutil.copy(EXAMPLE_POLICIES, tmp_path / "upgrade_policies.yaml")
    store = PlanStore(tmp_path)
    plan = {"plugin": "crm-sync", "policy": "standard-grey", "description": "bad \ud800"}
    validation = store.validate("fresh", plan_text("fresh", plan))
    assert validation.plan is None
    assert any("lone surrogate" in problem.message for problem in validation.errors)
