"""The one client of Airflow's REST API (`/api/v2`) and of the project's control-plane API, used
by the `powerx plugin` commands, the control plane's loopback calls and the deployment smoke
script: `constants` (the names they share; imports nothing), `errors` (typed failures),
`settings` (where Airflow is), `rest` (Airflow's API), `control_plane` (ours). Nothing here
imports Airflow.

    from powerx_upgrade import airflow_client as http

    api = http.AirflowClient.from_settings(http.ConnectionSettings.from_env())
    run_id = api.trigger(http.dag_id_of("crm-sync-standard"), {"target_version": "2.4.0"})
    http.ControlPlane(api).run(run_id)
"""

from powerx_upgrade.airflow_client.constants import (
    APPROVAL_HEADER,
    CLIENT_HEADER,
    CONTROL_PLANE_PREFIX,
    DAG_PREFIX,
    DEFAULT_AIRFLOW_URL,
    ENV_APPROVAL_TOKEN,
    ENV_PASSWORD,
    ENV_TOKEN,
    ENV_URL,
    ENV_USERNAME,
    HITL_SETTLE_SECONDS,
    ROLLBACK_DAG_ID,
    dag_id_of,
    plan_id_of,
)
from powerx_upgrade.airflow_client.control_plane import ControlPlane
from powerx_upgrade.airflow_client.errors import (
    AlreadyAnswered,
    ApiError,
    Conflict,
    ControlPlaneMissing,
    Forbidden,
    Invalid,
    NotAuthenticated,
    NotFound,
    ServerError,
    Unreachable,
    error_detail,
    raise_for,
)
from powerx_upgrade.airflow_client.rest import (
    AirflowClient,
    flat_hitl,
    hitl_path,
    loopback_url,
    quote_part,
)
from powerx_upgrade.airflow_client.settings import ConnectionSettings

__all__ = [
    "APPROVAL_HEADER",
    "CLIENT_HEADER",
    "CONTROL_PLANE_PREFIX",
    "DAG_PREFIX",
    "DEFAULT_AIRFLOW_URL",
    "ENV_APPROVAL_TOKEN",
    "ENV_PASSWORD",
    "ENV_TOKEN",
    "ENV_URL",
    "ENV_USERNAME",
    "HITL_SETTLE_SECONDS",
    "ROLLBACK_DAG_ID",
    "AirflowClient",
    "AlreadyAnswered",
    "ApiError",
    "Conflict",
    "ConnectionSettings",
    "ControlPlane",
    "ControlPlaneMissing",
    "Forbidden",
    "Invalid",
    "NotAuthenticated",
    "NotFound",
    "ServerError",
    "Unreachable",
    "dag_id_of",
    "error_detail",
    "flat_hitl",
    "hitl_path",
    "loopback_url",
    "plan_id_of",
    "quote_part",
    "raise_for",
]
