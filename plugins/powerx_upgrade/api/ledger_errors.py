"""A control plane whose ledger cannot be used answers 503 with the reason instead of a bare
500: a ledger not at the code's revision (`LedgerNotMigrated`: run `powerx ledger upgrade`) or
a `powerx_ledger` connection that is defined but unusable (`LedgerConnectionError`). Not
audited: the audit outbox is in that ledger."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse

from powerx_upgrade.api.errors import Refused
from powerx_upgrade.ledger import LedgerNotMigrated

log = logging.getLogger(__name__)


async def ledger_unavailable_handler(request: Request, exc: Exception) -> JSONResponse:
    code = "ledger_not_migrated" if isinstance(exc, LedgerNotMigrated) else "ledger_unavailable"
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(Refused(503, code, str(exc)).body(), status_code=503)
