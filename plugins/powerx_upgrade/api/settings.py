"""What the API needs from its surroundings (ledger, config directory, approval settings, the
api-server's own address, the auth manager), resolved from Airflow in the api-server process
or handed in by tests. Everything is resolved lazily: the plugin is imported by every Airflow
component, and only the api-server serves requests."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from powerx_upgrade.api.auth import AirflowAuth, Authenticator
from powerx_upgrade.ledger import Ledger

BODY_LIMIT = 64 * 1024
AIRFLOW_URL_ENV = "POWERX_UPGRADE_AIRFLOW_API_URL"
"""Overrides the loopback address the API uses to call Airflow's REST API (e.g. https)."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ApiSettings:
    """The API's wiring.

    :param ledger: returns the ledger (called per request; cache it).
    :param config_dir: returns the config location (a directory for POST /plan).
    :param approval_settings: returns the approval-token settings (`powerx_approval`).
    :param airflow_url: returns the base URL of Airflow's REST API for loopback calls.
    :param auth: authenticates callers and checks their DAG permissions.
    :param now: the clock (approval tokens' exp/nbf).
    :param body_limit: the largest request body, in bytes (413 above).
    :param reports_base: where reports are stored (None: `reporting.store.reports_base()`).
    :param hitl_settle: see `airflow_client.HITL_SETTLE_SECONDS`.
    :param platform_tenants: a plugin's tenants as the platform lists them (the UI's fleet);
        default: the `powerx_platform` connection's hook.
    """

    ledger: Callable[[], Ledger]
    config_dir: Callable[[], Path]
    approval_settings: Callable[[], Any]
    airflow_url: Callable[[], str]
    auth: Authenticator = field(default_factory=AirflowAuth)
    now: Callable[[], datetime] = _now
    body_limit: int = BODY_LIMIT
    reports_base: str | None = None
    hitl_settle: float | None = None
    platform_tenants: Callable[[str], list[dict[str, Any]]] = field(
        default=lambda plugin: _airflow_platform_tenants(plugin)
    )

    @classmethod
    def from_airflow(cls) -> ApiSettings:
        """The api-server's own: connections through Airflow's secrets backends."""
        from powerx_upgrade.config import config_location

        return cls(
            ledger=_airflow_ledger,
            config_dir=config_location,
            approval_settings=_airflow_approval_settings,
            airflow_url=airflow_api_url,
        )


def ledger_url_from_airflow() -> str:
    """The `powerx_ledger` connection as the api-server sees it: the same resolution as the
    tasks (`orchestration.ledger_connection.resolve_ledger_url`), its errors included."""
    from powerx_upgrade.orchestration.ledger_connection import resolve_ledger_url

    return resolve_ledger_url()


@functools.cache
def _ledger_for(url: str) -> Ledger:
    return Ledger(url)


def _airflow_ledger() -> Ledger:
    return _ledger_for(ledger_url_from_airflow())


def _airflow_platform_tenants(plugin: str) -> list[dict[str, Any]]:
    from powerx_upgrade.orchestration.hooks.platform import PowerXPlatformHook

    return PowerXPlatformHook().list_tenants(plugin)


def _airflow_approval_settings() -> Any:
    from powerx_upgrade.orchestration.approvals import approval_settings

    return approval_settings()


def airflow_api_url() -> str:
    """$POWERX_UPGRADE_AIRFLOW_API_URL, else the api-server on 127.0.0.1 at its own port."""
    from airflow.configuration import conf

    from powerx_upgrade.airflow_client import loopback_url

    explicit = os.environ.get(AIRFLOW_URL_ENV)
    if explicit:
        return explicit.rstrip("/")
    ssl = bool(conf.get("api", "ssl_cert", fallback=""))
    return loopback_url(
        conf.get("api", "base_url", fallback=None),
        conf.getint("api", "port", fallback=8080),
        ssl=ssl,
    )
