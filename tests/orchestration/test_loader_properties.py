"""Issue 15: generated malformed plan files through the DAG loader (`build_dags()`, what
dags/upgrade_plans.py runs, reading the folder named by $POWERX_UPGRADE_CONFIG). It never raises;
the rollback DAG and the good plan's DAG are always there; a file with errors shows as a broken
DAG. 1,000 cases in process (derandomised when CI=true); a real DagBag over a fixed set is in
test_isolation.py."""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings

from powerx_upgrade.orchestration.factory import build_dags
from tests.hostile import POLICIES, malformed_files

pytestmark = pytest.mark.dags

MEMORY_BOUND_KB = 200 * 1024


@pytest.fixture(scope="module")
def config_dir():
    folder = Path(tempfile.mkdtemp(prefix="powerx-loader-fuzz-"))
    (folder / "plans").mkdir()
    (folder / "upgrade_policies.yaml").write_text(POLICIES)
    (folder / "plans" / "good.yaml").write_text("plans:\n  good: {plugin: crm-sync, policy: std}\n")
    previous = os.environ.get("POWERX_UPGRADE_CONFIG")
    os.environ["POWERX_UPGRADE_CONFIG"] = str(folder)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield folder
    # The high-water mark of the process grew by less than the bound over all the cases.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < MEMORY_BOUND_KB
    if previous is None:
        os.environ.pop("POWERX_UPGRADE_CONFIG", None)
    else:
        os.environ["POWERX_UPGRADE_CONFIG"] = previous
    shutil.rmtree(folder, ignore_errors=True)


@settings(max_examples=1000)
@given(data=malformed_files())
def test_the_dag_loader_never_raises_and_keeps_the_others(config_dir, data):
    (config_dir / "plans" / "zz-fuzz.yaml").write_bytes(data)
    dags = build_dags()
    assert "plugin_upgrade_rollback" in dags
    text = data.decode("utf-8", "replace")
    if not any(word in text for word in ("good", "std", "policies")):
        assert "invalid-plan" not in dags["plugin_upgrade__good"].tags
    broken = [dag for dag in dags.values() if "invalid-plan" in dag.tags]
    for dag in broken:
        assert "zz-fuzz.yaml" in dag.doc_md or "good" in dag.dag_id
