"""The project's control-plane API at `/internal/version/upgrade` (mounted in Airflow's
api-server by the `powerx_upgrade` plugin), called with the same token as Airflow's REST API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from powerx_upgrade.airflow_client.constants import (
    APPROVAL_HEADER,
    CLIENT_HEADER,
    CONTROL_PLANE_PREFIX,
)
from powerx_upgrade.airflow_client.errors import ControlPlaneMissing, error_detail, raise_for
from powerx_upgrade.airflow_client.rest import AirflowClient, quote_part


class ControlPlane:
    """The project's API at `/internal/version/upgrade` (mounted in Airflow's api-server by the
    `powerx_upgrade` plugin), with the same bearer token as the REST API. Operations that need
    an approval token send it as `X-Approval-Token`; every call says `X-PowerX-Client: cli`.

    :param api: the REST client whose address and token are used.
    """

    def __init__(self, api: AirflowClient):
        self.api = api

    def _call(
        self,
        method: str,
        path: str,
        *,
        approval: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {CLIENT_HEADER: "cli"}
        if approval:
            headers[APPROVAL_HEADER] = approval
        response = self.api.send(method, f"{CONTROL_PLANE_PREFIX}{path}", headers=headers, **kwargs)
        if response.status_code == 404 and error_detail(response)[0] == "Not Found":
            raise ControlPlaneMissing(
                method,
                str(response.request.url),
                404,
                f"Airflow at {self.api.base_url} does not serve the control-plane API "
                f"({CONTROL_PLANE_PREFIX}): is the powerx-grey-upgrade package installed in its "
                "api-server?",
            )
        raise_for(method, response)
        return response

    def run(self, run_id: str) -> dict[str, Any]:
        """`GET /runs/{run_id}`: batches, verdicts, decisions, controls, outcome."""
        return self._call("GET", f"/runs/{quote_part(run_id)}").json()

    def rollback(self, body: Mapping[str, Any], *, approval: str | None) -> dict[str, Any]:
        """`POST /rollback` `{run_id | plan_id, scope?, reason}`."""
        return self._call("POST", "/rollback", json=dict(body), approval=approval).json()

    def adjust(
        self, run_id: str, adjust: Mapping[str, Any], reason: str, *, approval: str | None
    ) -> dict[str, Any]:
        """`PATCH /runs/{run_id}` `{adjust, reason}`."""
        body = {"adjust": dict(adjust), "reason": reason}
        return self._call(
            "PATCH", f"/runs/{quote_part(run_id)}", json=body, approval=approval
        ).json()

    def decide(
        self,
        run_id: str,
        decision: str,
        *,
        reason: str,
        batch: int | None = None,
        approval: str | None,
    ) -> dict[str, Any]:
        """`POST /runs/{run_id}/decisions` `{decision, batch?, reason}`."""
        body: dict[str, Any] = {"decision": decision, "reason": reason}
        if batch is not None:
            body["batch"] = batch
        path = f"/runs/{quote_part(run_id)}/decisions"
        return self._call("POST", path, json=body, approval=approval).json()

    def report(self, run_id: str, fmt: str = "md") -> str:
        """`GET /runs/{run_id}/report?format=...`: the stored report's text."""
        return self._call("GET", f"/runs/{quote_part(run_id)}/report", params={"format": fmt}).text
