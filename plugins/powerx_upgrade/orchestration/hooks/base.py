"""The shared HTTP plumbing of the PowerX hooks: JSON in and out, retries, typed errors."""

from __future__ import annotations

import json
import threading
from typing import Any

import requests
import tenacity
from airflow.providers.http.hooks.http import HttpHook
from requests import PreparedRequest, Request, Session
from requests.utils import get_netrc_auth
from requests_toolbelt.adapters.socket_options import TCPKeepAliveAdapter

from powerx_upgrade.rollout.errors import (
    PowerXError,
    PowerXUnavailable,
    error_for,
    is_retryable,
)

DEFAULT_TIMEOUT = 30.0
POOL_SIZE = 256
"""Keep-alive connections the hook's session keeps per host: above any rollout concurrency
(policy `concurrency` <= 200), so no thread ever opens a throwaway connection."""


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
        # HttpHook's own keep-alive adapter, with a pool as large as the rollout's concurrency
        self.keep_alive_adapter = TCPKeepAliveAdapter(
            idle=120, count=20, interval=30, pool_maxsize=POOL_SIZE
        )
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._options: dict[str, Any] = {}
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

    def _pooled(self) -> tuple[Session, dict[str, Any]]:
        """The hook's one keep-alive session, built once from the Airflow connection (host,
        auth, headers, TLS options of its extra) and shared by every thread of the task.

        What `requests` would look up in the environment on every call (proxies, CA bundle,
        `~/.netrc`) is looked up once here: the host does not change within a hook."""
        with self._lock:
            if self._session is None:
                session = self.get_conn(extra_options={"check_response": False})
                base = self.url_from_endpoint("")
                if session.trust_env and session.auth is None:
                    session.auth = get_netrc_auth(base) or _NoAuth()
                settings = session.merge_environment_settings(
                    base,
                    proxies=session.proxies,
                    stream=session.stream,
                    verify=session.verify,
                    cert=session.cert,
                )
                timeout = self.merged_extra.get("timeout") or self.timeout
                allow_redirects = self.merged_extra.get("allow_redirects", True)
                self._options = {
                    **settings,
                    "timeout": timeout,
                    "allow_redirects": allow_redirects,
                }
                self._session = session
            return self._session, self._options

    def _call_once(
        self, method: str, endpoint: str, payload: dict[str, Any] | None
    ) -> dict[str, Any]:
        method = method.upper()
        session, options = self._pooled()
        prepared = session.prepare_request(
            _request(method, self.url_from_endpoint(endpoint), payload)
        )
        try:
            response = session.send(prepared, **options)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PowerXUnavailable(
                f"no answer: {type(exc).__name__}", method=method, endpoint=endpoint
            ) from exc
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {"message": response.text[:500]}
        if response.status_code >= 300:
            raise error_for(
                response.status_code,
                body,
                method,
                endpoint,
                retry_after=response.headers.get("Retry-After"),
            )
        return body

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.call("GET", "health")
        except PowerXError as exc:
            return False, str(exc)
        return True, "connection ok"


def _request(method: str, url: str, payload: dict[str, Any] | None) -> Request:
    """GET/HEAD carry the payload as query parameters, every other method as a JSON body."""
    if method in ("GET", "HEAD"):
        return Request(method, url, params=payload)
    return Request(
        method, url, data=json.dumps(payload or {}), headers={"Content-Type": "application/json"}
    )


class _NoAuth(requests.auth.AuthBase):
    """No credentials, said once: keeps `requests` from reading `~/.netrc` on every call."""

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        return request
