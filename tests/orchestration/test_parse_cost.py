"""Every task process parses the DAG file before it runs: the parse loads no client stack a
task may not need (the HTTP hooks' provider, aiohttp and requests; the approval tokens' JWT
library). Those load when a task first asks for a hook or checks an answer
(docs/performance.md, "Fewer scheduler hops")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import CONFIG_DIR, ROOT

pytestmark = pytest.mark.dags

HEAVY = ("airflow.providers.http.hooks", "aiohttp", "requests", "jwt")
"""Loaded on first use only. (Airflow's providers manager reads every provider's
`get_provider_info` itself; that is not the hooks.)"""

PARSE = """
import json, runpy, sys
before = set(sys.modules)
dags = runpy.run_path(sys.argv[1])
loaded = sorted({m if m.startswith("airflow.providers.") else m.split(".")[0]
                 for m in set(sys.modules) - before})
print(json.dumps({"dags": sorted(k for k in dags if k.startswith("plugin_upgrade")),
                  "loaded": loaded}))
"""


def parse_in_fresh_process(*, preload: str = "") -> dict[str, list[str]]:
    """Parse dags/upgrade_plans.py in a new interpreter (as a task process does) and list the
    top-level modules the parse loaded."""
    env = {**os.environ, "POWERX_UPGRADE_CONFIG": str(CONFIG_DIR)}
    done = subprocess.run(
        [sys.executable, "-c", preload + PARSE, str(ROOT / "dags" / "upgrade_plans.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_parsing_the_dag_file_loads_no_http_or_jwt_stack():
    parsed = parse_in_fresh_process()
    assert "plugin_upgrade__crm-sync-standard" in parsed["dags"]
    assert "plugin_upgrade_rollback" in parsed["dags"]
    assert "powerx_upgrade" in parsed["loaded"]  # the parse did load the package itself
    heavy = [m for m in parsed["loaded"] if m.startswith(HEAVY)]
    assert heavy == [], f"the DAG file's parse loads {heavy}"


PRELOAD_PLUGIN = """
import sys
import powerx_upgrade.api.plugin
assert "powerx_upgrade.orchestration.hooks.platform" in sys.modules
assert "aiohttp" in sys.modules and "requests" in sys.modules
"""


def test_a_process_that_loaded_the_plugin_forks_warm_task_processes():
    """Airflow components load the plugin before they fork task processes (the LocalExecutor's
    workers, the dag-processor's parses): the plugin brings the DAG factory and the HTTP stack,
    so the DAG file's parse in a task process loads nothing of the package, and its first
    audit record or platform call imports nothing."""
    parsed = parse_in_fresh_process(preload=PRELOAD_PLUGIN)
    assert "plugin_upgrade__crm-sync-standard" in parsed["dags"]
    assert "powerx_upgrade" not in parsed["loaded"], parsed["loaded"]
    assert [m for m in parsed["loaded"] if m.startswith(HEAVY)] == []


def test_a_task_asking_for_a_hook_still_gets_one():
    from powerx_upgrade.orchestration import runtime
    from powerx_upgrade.orchestration.hooks.platform import PowerXPlatformHook

    assert isinstance(runtime.platform(), PowerXPlatformHook)


def test_a_steps_hooks_are_built_when_it_first_calls_them(monkeypatch, tmp_path):
    from powerx_upgrade.orchestration import runtime
    from powerx_upgrade.orchestration.hooks.audit import PowerXAuditHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_POWERX_LEDGER",
        json.dumps({"conn_type": "generic", "extra": {"url": f"sqlite:///{tmp_path / 'l.db'}"}}),
    )
    services = runtime.services()
    audit = services.recorder.audit_client
    assert audit._built is None  # nothing built yet: a step that never audits loads no hook
    assert audit.conn_name_attr == PowerXAuditHook.conn_name_attr
    assert isinstance(audit._built, PowerXAuditHook)
    assert services.platform.default_conn_name == "powerx_platform"


def test_a_client_asked_for_by_many_threads_at_once_is_built_once():
    """A rollback shard's first calls start together on 50 threads: one hook for all of them
    (each hook looks its connection up and opens its own connections)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from powerx_upgrade.orchestration.runtime import OnFirstUse

    built: list[object] = []
    lock = threading.Lock()

    class Slow:
        def __init__(self) -> None:
            time.sleep(0.05)  # the HTTP stack's import, the connection lookup
            with lock:
                built.append(self)

        def call(self) -> int:
            return id(self)

    lazy = OnFirstUse(Slow)
    with ThreadPoolExecutor(50) as pool:
        used = set(pool.map(lambda _: lazy.call(), range(200)))
    assert len(built) == 1
    assert used == {id(built[0])}
