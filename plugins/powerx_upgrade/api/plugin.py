"""The AirflowPlugin that mounts the control-plane API in the api-server.

Registered once, through the package's `airflow.plugins` entry point (pyproject.toml);
`plugins/.airflowignore` keeps the plugins-folder scan away from the package, so Airflow never
registers it a second time.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from powerx_upgrade.api.app import URL_PREFIX, create_app
from powerx_upgrade.api.ui.model import ui_root
from powerx_upgrade.orchestration import listeners as run_listeners
from powerx_upgrade.orchestration import preload  # noqa: F401  task processes start warm
from powerx_upgrade.rollout.evidence import FLEET_ROUTE, ROLLOUT_ROUTE

PLUGIN_NAME = "powerx_upgrade"

app = create_app()
"""Settings resolve from Airflow at the first request, so importing this (every Airflow
component loads plugins) connects to nothing."""


class PowerXUpgradePlugin(AirflowPlugin):
    name = PLUGIN_NAME
    fastapi_apps = [  # noqa: RUF012 - Airflow's plugin interface is class attributes
        {"app": app, "url_prefix": URL_PREFIX, "name": "PowerX grey upgrade"},
    ]
    # A run marked failed from outside is settled in the ledger (orchestration/listeners.py).
    listeners = [run_listeners]  # noqa: RUF012
    # The UI pages (docs/ui.md), served by the app above: Airflow's UI shows them in an iframe
    # and fills in {DAG_ID} and {RUN_ID}; the browser's `_token` cookie authenticates them.
    external_views = [  # noqa: RUF012
        {
            "name": "Grey upgrades",
            "href": f"{ui_root()}{URL_PREFIX}/ui/grey-upgrades",
            "destination": "nav",
            "url_route": FLEET_ROUTE,
            "nav_top_level": True,
        },
        {
            "name": "Rollout",
            "href": f"{ui_root()}{URL_PREFIX}/ui/rollout?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": ROLLOUT_ROUTE,
        },
    ]
