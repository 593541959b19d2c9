"""Where Airflow is and how to log in, from flags, `POWERX_AIRFLOW_*` variables or defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from powerx_upgrade.airflow_client.constants import (
    DEFAULT_AIRFLOW_URL,
    ENV_PASSWORD,
    ENV_TOKEN,
    ENV_URL,
    ENV_USERNAME,
)


@dataclass(frozen=True)
class ConnectionSettings:
    """Where Airflow is and how to log in: a ready token, or a username and password that
    `POST /auth/token` turns into one.

    :param url: the api-server's base URL.
    :param token: a bearer token for the REST API.
    :param username: login for `POST /auth/token` (when no token is given).
    :param password: its password.
    :param timeout: seconds per HTTP request.
    """

    url: str = DEFAULT_AIRFLOW_URL
    token: str | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
    ) -> ConnectionSettings:
        """Flags first, then `POWERX_AIRFLOW_*` variables, then the defaults."""
        env = os.environ if env is None else env
        return cls(
            url=(url or env.get(ENV_URL) or DEFAULT_AIRFLOW_URL).rstrip("/"),
            token=token or env.get(ENV_TOKEN) or None,
            username=username or env.get(ENV_USERNAME) or None,
            password=password or env.get(ENV_PASSWORD) or None,
            timeout=timeout,
        )
