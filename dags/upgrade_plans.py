"""Airflow DAG loader: one grey-upgrade DAG per plan in the config ($POWERX_UPGRADE_CONFIG,
default include/config/). Everything lives in the installed package; this file only hands the
config to the factory. (Airflow's safe mode reads files that mention both "airflow" and "dag".)
"""

from powerx_upgrade.orchestration.factory import build_dags

globals().update(build_dags())
