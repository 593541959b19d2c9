"""The control-plane API (FastAPI), mounted by Airflow's api-server at
`/internal/version/upgrade`: plans, rollback, run status, runtime adjustments, human decisions
and reports.

Every request is authenticated with Airflow's own token and authorised on the plan's DAG;
critical operations also need an approval token (`X-Approval-Token`). Every refusal answers a
JSON error, changes nothing and is audited (`api.refused`) in the ledger's audit outbox; every
acceptance is audited too (`api.accepted`).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from powerx_upgrade.airflow_client import CONTROL_PLANE_PREFIX
from powerx_upgrade.api.audit import http_handler, refused_handler, validation_handler
from powerx_upgrade.api.body_limit import BodyLimit
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.last_resort import LastResort
from powerx_upgrade.api.ledger_errors import ledger_unavailable_handler
from powerx_upgrade.api.routers import decisions, plans, rollback, runs
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.api.ui import pages
from powerx_upgrade.ledger import LedgerNotMigrated
from powerx_upgrade.orchestration.ledger_connection import LedgerConnectionError

URL_PREFIX = CONTROL_PLANE_PREFIX


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """The API. `settings` None: resolved from Airflow at the first request (the plugin is
    imported by every Airflow component; only the api-server serves it)."""
    app = FastAPI(
        title="PowerX grey upgrade: control plane",
        description=__doc__,
        version="1",
    )
    app.state.powerx_settings = settings
    app.add_middleware(LastResort)
    app.add_middleware(BodyLimit)
    app.add_exception_handler(Refused, refused_handler)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_handler)  # type: ignore[arg-type]
    for unusable in (LedgerNotMigrated, LedgerConnectionError):
        app.add_exception_handler(unusable, ledger_unavailable_handler)
    app.add_exception_handler(HTTPException, http_handler)  # type: ignore[arg-type]
    for concept in (plans, rollback, runs, decisions, pages):
        app.include_router(concept.router)
    return app
