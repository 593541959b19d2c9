"""The AirflowPlugin that mounts the control-plane API in the api-server.

Registered once, through the package's `airflow.plugins` entry point (pyproject.toml);
`plugins/.airflowignore` keeps the plugins-folder scan away from the package, so Airflow never
registers it a second time.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from powerx_upgrade.api.app import URL_PREFIX, create_app

PLUGIN_NAME = "powerx_upgrade"

app = create_app()
"""Settings resolve from Airflow at the first request, so importing this (every Airflow
component loads plugins) connects to nothing."""


class PowerXUpgradePlugin(AirflowPlugin):
    name = PLUGIN_NAME
    fastapi_apps = [  # noqa: RUF012 - Airflow's plugin interface is class attributes
        {"app": app, "url_prefix": URL_PREFIX, "name": "PowerX grey upgrade"},
    ]
