"""Kept only so that code not yet moved to `powerx_upgrade.airflow_client` (the local stack
runner) still imports; the client lives there. Delete once nothing imports this module."""

from powerx_upgrade.airflow_client import *  # noqa: F403
from powerx_upgrade.airflow_client import __all__  # noqa: F401
