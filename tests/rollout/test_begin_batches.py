"""A shard's actions begin in transactions of at most `BEGIN_BATCH` tenants: a rollback shard
can hold tens of thousands (on the LocalExecutor as many shards as CPUs), and one transaction
for all of them held SQLite's write lock for the whole insert and, on PostgreSQL, one advisory
lock per tenant: 50,000 in one transaction ran out of the test server's lock table ("out of
shared memory", measured; in batches all 50,000 began, in 80 s, so the suite checks the batches
at a smaller size)."""

from __future__ import annotations

from pathlib import Path

import pytest

from powerx_upgrade.ledger import ActionStart, Ledger
from powerx_upgrade.rollout import batching
from powerx_upgrade.rollout.batching import BEGIN_BATCH, begin_all
from powerx_upgrade.rollout.context import RunContext

PLUGIN = "crm-sync"
SHARD = 3_000
"""Three batches."""


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path: Path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    with Ledger(url) as opened:
        yield opened


def context(ledger: Ledger) -> RunContext:
    ledger.start_run(
        "run-1",
        dag_id="plugin_upgrade__crm-sync-standard",
        plan_id="crm-sync-standard",
        plugin=PLUGIN,
        target_version="2.4.0",
    )
    return RunContext(
        run_id="run-1",
        dag_id="plugin_upgrade__crm-sync-standard",
        plan_id="crm-sync-standard",
        plugin=PLUGIN,
        target_version="2.4.0",
    )


def starts(ctx: RunContext, count: int) -> list[ActionStart]:
    return [
        ActionStart(
            tenant_id=f"t-{i:05d}",
            idempotency_key=ctx.key("rollback", f"t-{i:05d}"),
            to_version="2.3.1",
            batch_index=1,
            from_version="2.4.0",
        )
        for i in range(count)
    ]


def test_a_shard_of_several_batches_begins_every_action_in_order(ledger: Ledger):
    ctx = context(ledger)
    wanted = starts(ctx, SHARD)
    began = begin_all(ledger, ctx, "rollback", wanted)
    assert [b.idempotency_key for b in began] == [s.idempotency_key for s in wanted]
    assert len(ledger.actions("run-1", kind="rollback", state="started")) == SHARD


def test_the_actions_begin_in_transactions_of_at_most_begin_batch(ledger: Ledger, monkeypatch):
    ctx = context(ledger)
    sizes: list[int] = []
    original = Ledger.begin_actions

    def counted(self, **kwargs):
        sizes.append(len(kwargs["starts"]))
        return original(self, **kwargs)

    monkeypatch.setattr(Ledger, "begin_actions", counted)
    monkeypatch.setattr(batching, "BEGIN_BATCH", 40)
    began = begin_all(ledger, ctx, "rollback", starts(ctx, 100))
    assert sizes == [40, 40, 20]
    assert len(began) == 100
    # a replay (the task retried after a crash between two batches) begins nothing twice
    again = begin_all(ledger, ctx, "rollback", starts(ctx, 100))
    assert [a.id for a in again] == [b.id for b in began]


def test_the_batch_is_larger_than_a_deploy_shard():
    assert BEGIN_BATCH >= 250  # a deploy shard of the default size still begins in one


def test_on_postgresql_the_tenants_locks_are_held_until_the_transaction_ends(postgres_url):
    """The batch's advisory locks, taken in one statement, are really held: another session
    cannot take any of them until the batch's transaction ends."""
    from sqlalchemy import create_engine, text

    from powerx_upgrade.ledger.engine import serialize_on_all

    topics = [f"powerx_ledger_tenant:{PLUGIN}:t-{i:05d}" for i in range(300)]
    engine = create_engine(postgres_url)
    other = create_engine(postgres_url)
    taken = text("SELECT pg_try_advisory_xact_lock(hashtext(:topic))")
    try:
        with engine.begin() as conn:
            serialize_on_all(conn, topics)
            with other.begin() as probe:
                assert [probe.execute(taken, {"topic": t}).scalar() for t in topics[::50]] == [
                    False
                ] * 6
        with other.begin() as probe:
            assert probe.execute(taken, {"topic": topics[0]}).scalar() is True
    finally:
        engine.dispose()
        other.dispose()
