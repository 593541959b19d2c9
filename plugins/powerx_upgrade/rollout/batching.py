"""Ledger writes of a deploy or rollback shard, batched: the shard's actions begin in one
transaction per `BEGIN_BATCH` tenants and end in one per `LEDGER_BATCH` outcomes."""

from __future__ import annotations

import logging
import threading

from powerx_upgrade.ledger import ActionOutcome, ActionRecord, ActionStart, Ledger, TenantHeld
from powerx_upgrade.rollout.context import RunContext

log = logging.getLogger(__name__)

LEDGER_BATCH = 50
"""Tenant outcomes written per ledger transaction. Outcomes not yet written when a task dies
are actions left `started`; the retried task replays their idempotency keys and the platform
answers from its record, so a batch costs time on a crash, never a double operation."""


BEGIN_BATCH = 1000
"""Tenants whose actions begin in one ledger transaction. A deploy shard (250 by default) begins
in one; a rollback shard can hold tens of thousands (as many shards as CPUs on the
LocalExecutor), and one transaction for all of them held SQLite's write lock for the whole
insert and took one PostgreSQL advisory lock per tenant: 50,000 ran out of the server's lock
table ("out of shared memory"). A crash between two batches leaves the later tenants not begun;
the retried task begins them, and replays the earlier ones by their keys."""


def begin_all(
    ledger: Ledger, ctx: RunContext, kind: str, starts: list[ActionStart]
) -> list[ActionRecord | TenantHeld]:
    """Begin a shard's actions, `BEGIN_BATCH` per transaction; records in the order given."""
    began: list[ActionRecord | TenantHeld] = []
    for first in range(0, len(starts), BEGIN_BATCH):
        began += _begin_batch(ledger, ctx, kind, starts[first : first + BEGIN_BATCH])
    return began


def _begin_batch(
    ledger: Ledger, ctx: RunContext, kind: str, starts: list[ActionStart]
) -> list[ActionRecord | TenantHeld]:
    """Begin a batch of actions in one transaction. When another active run holds one of its
    tenants the batch writes nothing: then begin them one by one, so that the others go ahead
    and only the held tenant's thread fails (as it did before writes were batched)."""
    try:
        return list(
            ledger.begin_actions(run_id=ctx.run_id, plugin=ctx.plugin, kind=kind, starts=starts)
        )
    except TenantHeld:
        log.warning("a tenant of this shard is held by another run: beginning one by one")
    began: list[ActionRecord | TenantHeld] = []
    for start in starts:
        try:
            began += ledger.begin_actions(
                run_id=ctx.run_id, plugin=ctx.plugin, kind=kind, starts=[start]
            )
        except TenantHeld as exc:
            began.append(exc)
    return began


class Outcomes:
    """Tenant outcomes on their way to the ledger, `LEDGER_BATCH` per transaction, each with
    its audit record in the same transaction."""

    def __init__(self, ledger: Ledger, size: int = LEDGER_BATCH) -> None:
        self.ledger = ledger
        self.size = size
        self._pending: list[ActionOutcome] = []
        self._lock = threading.Lock()
        self.audit_ids: list[str] = []
        """The audit records written with the outcomes so far: what the shard delivers."""

    def add(self, outcome: ActionOutcome) -> None:
        with self._lock:
            self._pending.append(outcome)
            if len(self._pending) < self.size:
                return
            batch, self._pending = self._pending, []
        self._write(batch)

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        self._write(batch)

    def _write(self, batch: list[ActionOutcome]) -> None:
        self.ledger.finish_actions(batch)
        written = [o.audit.audit_id for o in batch if o.audit is not None and o.audit.audit_id]
        with self._lock:
            self.audit_ids += written
