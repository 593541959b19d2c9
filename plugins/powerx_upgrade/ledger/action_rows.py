"""Tenant actions as light rows for a report over a whole fleet (`Ledger.action_rows`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, String, Text, cast, select, type_coerce

from powerx_upgrade.ledger.schema import actions as actions_table


class ActionRow(NamedTuple):
    """An action as a report reads it (`ActionRepository.action_rows`): the fields of
    `ActionRecord` a report needs, with the same names, built without per-row conversion."""

    id: int
    tenant_id: str
    batch_index: int | None
    kind: str
    state: str
    noop: bool
    attempts: int
    error: str | None
    detail: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None


_EMPTY_DETAIL = frozenset({None, "{}", "null"})
"""How an action's empty detail comes back as text (most actions): not worth a JSON decode."""


def _utc(value: str | datetime | None) -> datetime | None:
    """A timestamp column read raw: SQLite's naive UTC text (parsed in one C call, where the
    column type's converter takes three), or a driver's datetime (PostgreSQL)."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value + "+00:00")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def action_rows_query(run_id: str) -> Select[Any]:
    """The columns a report reads, in the order they began (by id); `detail` as text and the
    timestamps raw, converted by `action_rows`."""
    table = actions_table
    return (
        select(
            table.c.id,
            table.c.tenant_id,
            table.c.batch_index,
            table.c.kind,
            table.c.state,
            table.c.noop,
            table.c.attempts,
            table.c.error,
            cast(table.c.detail, Text),  # decoded below, only when not empty
            type_coerce(table.c.started_at, String),
            type_coerce(table.c.finished_at, String),
        )
        .where(table.c.run_id == run_id)
        .order_by(table.c.id)
    )


def action_rows(rows: Sequence[Sequence[Any]]) -> list[ActionRow]:
    """`action_rows_query`'s rows as ActionRows."""
    empty, utc, parse = _EMPTY_DETAIL, _utc, datetime.fromisoformat
    # SQLite's text timestamps parsed inline (two per row), the rest through `_utc`
    return [
        ActionRow(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            bool(row[5]),
            row[6],
            row[7],
            {} if row[8] in empty else (json.loads(row[8]) or {}),
            parse(row[9] + "+00:00") if row[9].__class__ is str else utc(row[9]),  # type: ignore[arg-type]  # started_at is never null
            parse(row[10] + "+00:00") if row[10].__class__ is str else utc(row[10]),
        )
        for row in rows
    ]
