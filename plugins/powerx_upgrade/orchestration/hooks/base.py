"""The shared HTTP plumbing of the PowerX hooks: JSON in and out, retries, typed errors."""

from __future__ import annotations

import json
import threading
from typing import Any

import requests
import tenacity
from airflow.providers.http.hooks.http import HttpHook

from powerx_upgrade.rollout.errors import (
    PowerXError,
    PowerXUnavailable,
    error_for,
    is_retryable,
)

DEFAULT_TIMEOUT = 30.0


class PowerXHttpHook(HttpHook):
    """Base of the PowerX hooks: `call()` sends JSON, retries with backoff, raises typed errors.

    :param conn_id: the Airflow connection (an HTTP connection: host, port, schema; optional
        login/password or an `Authorization` header in the extra).
    :param retries: attempts after the first for connection errors, timeouts, 5xx and 429.
    :param backoff: first wait between attempts in seconds; doubles each time (max 10 s).
    :param timeout: seconds per request (the connection extra's `timeout` wins when set).
    """

    conn_name_attr = "powerx_conn_id"
    conn_type = "http"

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(method="POST", http_conn_id=conn_id or self.default_conn_name)
        self.powerx_conn_id = self.http_conn_id
        self._lock = threading.Lock()
        self._cached_connection: Any = None
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout

    def call(
        self, method: str, endpoint: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One JSON call with retries; returns the decoded body of a 2xx answer."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff, max=10),
            retry=tenacity.retry_if_exception(is_retryable),
            reraise=True,
        )
        return retrying(self._call_once, method, endpoint, payload)

    def _connection(self) -> Any:
        """The connection, looked up once per hook (a deploy shares one hook across threads)."""
        with self._lock:
            if self._cached_connection is None:
                self._cached_connection = self.get_connection(self.http_conn_id)
            return self._cached_connection

    def _call_once(
        self, method: str, endpoint: str, payload: dict[str, Any] | None
    ) -> dict[str, Any]:
        method = method.upper()
        # HttpHook keeps the method on the instance: a hook shared by a thread pool must never
        # switch it (a GET of one thread would turn another's POST into a GET). One per call.
        call = HttpHook(method=method, http_conn_id=self.http_conn_id)
        call.get_connection = lambda conn_id: self._connection()  # type: ignore[method-assign]
        options = {"check_response": False, "timeout": self.timeout}
        try:
            if method == "GET":
                response = call.run(endpoint, data=payload, extra_options=options)
            else:
                response = call.run(
                    endpoint,
                    data=json.dumps(payload or {}),
                    headers={"Content-Type": "application/json"},
                    extra_options=options,
                )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PowerXUnavailable(
                f"no answer: {type(exc).__name__}", method=method, endpoint=endpoint
            ) from exc
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {"message": response.text[:500]}
        if response.status_code >= 300:
            raise error_for(response.status_code, body, method, endpoint)
        return body

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.call("GET", "health")
        except PowerXError as exc:
            return False, str(exc)
        return True, "connection ok"
