"""Airflow's REST API on loopback, called with the caller's own token: waiting human decisions
(HITL), answering them, triggering the rollback DAG. Airflow checks the caller's permissions
again on each call, so the API can never do more than the caller could do directly."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from powerx_upgrade.api.errors import Refused

HITL_SETTLE_SECONDS = 5.0
"""An answer goes out no sooner than this after the request was written: Airflow 3.3's
scheduler can fail a task whose answer arrives before it processed the exit of the worker that
parked it (see devstack.HITL_SETTLE_SECONDS); a human never answers that fast, the API can."""
ROLLBACK_DAG = "plugin_upgrade_rollback"


def loopback_url(base_url: str | None, port: int | None, *, ssl: bool = False) -> str:
    """The api-server as seen from itself: 127.0.0.1 on its own port, under the path of
    `[api] base_url` (a server behind a proxy at `/airflow` still serves that path)."""
    path = urlsplit(base_url).path.rstrip("/") if base_url else ""
    return f"{'https' if ssl else 'http'}://127.0.0.1:{port or 8080}{path}"


def _q(part: str) -> str:
    return quote(part, safe="")


class AirflowRest:
    """A few calls of Airflow's REST API as one caller.

    :param base_url: the api-server's address (loopback).
    :param token: the caller's Airflow token.
    :param timeout: seconds per call.
    """

    def __init__(self, base_url: str, token: str | None, *, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}/api/v2{path}"
        try:
            response = httpx.request(
                method, url, headers=self._headers, timeout=self.timeout, **kwargs
            )
        except httpx.HTTPError as exc:
            raise Refused(
                502,
                "airflow_unreachable",
                f"Airflow's REST API ({method} {path}) did not answer: {type(exc).__name__}",
            ) from None
        if response.status_code in (401, 403):
            raise Refused(
                403,
                "forbidden",
                f"Airflow refused {method} {path} for this user ({response.status_code}): "
                f"{_detail(response)}",
            )
        if response.is_error:
            raise Refused(
                response.status_code if response.status_code in (404, 409) else 502,
                "airflow_refused",
                f"Airflow answered {response.status_code} to {method} {path}: {_detail(response)}",
            )
        return response.json() if response.content else None

    # -- human decisions ---------------------------------------------------------------------

    def waiting(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The run's unanswered human-in-the-loop requests."""
        found = self._call(
            "GET",
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/hitlDetails",
            params={"response_received": "false", "limit": 100},
        )
        return [_flat(item) for item in (found or {}).get("hitl_details") or []]

    def answer(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        chosen: Sequence[str],
        *,
        map_index: int = -1,
        created_at: str | None = None,
        settle: float = HITL_SETTLE_SECONDS,
    ) -> dict[str, Any]:
        """Answer a waiting request (`PATCH .../taskInstances/{task}/{map}/hitlDetails`)."""
        age = _age_seconds(created_at)
        if age is not None and 0 <= age < settle:
            time.sleep(settle - age)
        path = (
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/"
            f"{map_index}/hitlDetails"
        )
        body = {"chosen_options": list(chosen), "params_input": {}}
        return dict(self._call("PATCH", path, json=body) or {})

    def reparse_file_of(self, dag_id: str) -> None:
        """Ask the dag-processor to parse the file that defines `dag_id` now (a priority parsing
        request, `PUT /parseDagFile/{file_token}`) instead of at its next scheduled pass."""
        dag = self._call("GET", f"/dags/{_q(dag_id)}")
        token = (dag or {}).get("file_token")
        if not token:
            raise Refused(502, "airflow_refused", f"Airflow gave no file token for {dag_id}")
        self._call("PUT", f"/parseDagFile/{_q(token)}")

    # -- DAG runs ----------------------------------------------------------------------------

    def dag_paused(self, dag_id: str) -> bool:
        """Whether a DAG is paused; refuses (403/404/502) when the caller may not see it or
        Airflow does not know it, so callers check this before anything is used up."""
        dag = self._call("GET", f"/dags/{_q(dag_id)}")
        return bool((dag or {}).get("is_paused"))

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any], *, note: str | None = None, paused: bool
    ) -> dict[str, Any]:
        """Trigger a run now (`POST /dags/{dag_id}/dagRuns`); a paused DAG is unpaused first,
        since its runs would wait in the queue: a rollback must not."""
        if paused:
            self._call("PATCH", f"/dags/{_q(dag_id)}", json={"is_paused": False})
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf)}
        if note:
            body["note"] = note
        run = dict(self._call("POST", f"/dags/{_q(dag_id)}/dagRuns", json=body) or {})
        run["unpaused"] = paused
        return run


def _flat(item: dict[str, Any]) -> dict[str, Any]:
    """A HITL request with its task's id and map index at the top (Airflow nests them in
    `task_instance`)."""
    task = item.get("task_instance") or {}
    map_index = item.get("map_index", task.get("map_index"))
    return {
        **item,
        "task_id": item.get("task_id") or task.get("task_id"),
        "map_index": -1 if map_index is None else int(map_index),
    }


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail if detail is not None else response.text[:300])


def _age_seconds(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (datetime.now(UTC) - moment).total_seconds()
