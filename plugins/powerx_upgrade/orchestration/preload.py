"""What a task process needs, imported once by the long-lived Airflow processes that fork them.

Every Airflow component loads plugins at start, this package's included (`api/plugin.py`
imports this module). The LocalExecutor's workers are forked from the scheduler after that,
and each task process is forked from a worker; the dag-processor forks a process per parse. A
module already imported before the fork costs a task process nothing. Without this, each task
process imported the DAG factory (its operators, sensors, task functions: about 0.1 s) while
parsing the DAG file, and the HTTP stack under the hooks (the http provider, aiohttp, requests:
about 0.3 s of CPU) at its first audit record, platform call or notification: 0.3-0.4 s of each
task on the critical path of a batch or a rollback (docs/performance.md, "Task processes start
warm").

The DAG file's own parse still loads no HTTP stack (tests/orchestration/test_parse_cost.py): a
process that has not loaded the plugin (a `dags test`, a tool) pays only for what it uses. The
price is paid once per component: a few MB of memory each, and code changes to this package take
effect when the components restart, as for any installed package.
"""

from __future__ import annotations

from powerx_upgrade.orchestration import factory
from powerx_upgrade.orchestration.hooks import audit, monitoring, notify, platform

PRELOADED = (factory, audit, monitoring, notify, platform)
