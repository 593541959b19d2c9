"""Issue 15: generated malformed plans through the validator (`parse_config`). None may crash
(any exception), and none may take more than the memory bound; the file beside it keeps its plan.
1,000 cases (derandomised when CI=true, see tests/conftest.py)."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings

from powerx_upgrade.domain.config import ConfigResult, parse_config
from powerx_upgrade.domain.problems import Problem
from tests.hostile import POLICIES, malformed_plans

pytestmark = pytest.mark.unit

MEMORY_BOUND = 200 * 1024 * 1024
GOOD = ("plans/good.yaml", "plans:\n  good: {plugin: crm-sync, policy: std}\n")


@pytest.fixture(scope="module")
def traced():
    tracemalloc.start()
    yield
    tracemalloc.stop()


@settings(max_examples=1000)
@given(text=malformed_plans)
def test_the_validator_answers_every_malformed_plan_with_problems(traced, text):
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result = parse_config([("upgrade_policies.yaml", POLICIES), GOOD, ("plans/fuzz.yaml", text)])
    peak = tracemalloc.get_traced_memory()[1] - before
    assert isinstance(result, ConfigResult)
    assert peak < MEMORY_BOUND
    for problem in result.problems:
        assert isinstance(problem, Problem)
        assert problem.file in ("upgrade_policies.yaml", "plans/good.yaml", "plans/fuzz.yaml")
        assert problem.message
    # Isolation: unless the generated file redefines what the good plan uses, it stays valid.
    if not any(word in text for word in ("good", "std", "policies")):
        assert "good" in result.plans, [str(p) for p in result.errors]
    if result.errors and "fuzz" in result.plans:
        assert not [p for p in result.errors if p.plan_id == "fuzz"]
