"""Run a live Airflow 3 stack on one machine (api-server, scheduler, dag-processor, triggerer;
LocalExecutor, SQLite) as subprocesses, drive it through its REST API, and always stop it.
`running_distributed_airflow` runs the distributed profile instead (PostgreSQL, Redis,
CeleryExecutor with two workers, two schedulers: what docker-compose.yaml describes; see
`profiles`).

This is what the stack tests and `powerx demo` stand on. Airflow is never imported here: every
component is an `airflow ...` subprocess of the same environment, so the caller's process keeps
its own Airflow settings (or none at all).

    with running_airflow(home, dags_folder=ROOT / "dags", env=connections) as stack:
        run_id = stack.trigger("plugin_upgrade__crm-sync-demo", {"target_version": "2.4.0"})
        stack.wait_for_run("plugin_upgrade__crm-sync-demo", run_id)

Every process the stack starts is stopped when the block ends, also when it raises or on
Ctrl-C: each component runs in its own process group, which is terminated (then killed); a final
sweep kills any straggler that still carries the stack's marker in its environment (processes
that left the group, e.g. task supervisors), by process id.
"""

from powerx_dev.devstack.components import (
    COMPONENTS,
    MARKER,
    Component,
    airflow_executable,
    marked_processes,
    start_component,
    stop_components,
    sweep,
)
from powerx_dev.devstack.distributed import DistributedStack, running_distributed_airflow
from powerx_dev.devstack.environment import StackSettings, migrate, stack_environment
from powerx_dev.devstack.errors import AirflowStackError, AirflowStackTimeout
from powerx_dev.devstack.launcher import running_airflow
from powerx_dev.devstack.stack import HEALTH_KEYS, TERMINAL_RUN_STATES, AirflowStack, StackApi
from powerx_dev.processes import free_port, parent_death_signal, tail

__all__ = [
    "COMPONENTS",
    "HEALTH_KEYS",
    "MARKER",
    "TERMINAL_RUN_STATES",
    "AirflowStack",
    "AirflowStackError",
    "AirflowStackTimeout",
    "Component",
    "DistributedStack",
    "StackApi",
    "StackSettings",
    "airflow_executable",
    "free_port",
    "marked_processes",
    "migrate",
    "parent_death_signal",
    "running_airflow",
    "running_distributed_airflow",
    "stack_environment",
    "start_component",
    "stop_components",
    "sweep",
    "tail",
]
