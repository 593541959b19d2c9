"""The cyclic garbage collector is paused while a report is read, built and written, and runs
again afterwards as it did before (issue 16: full collections cost a third of the CPU at
100,000 tenants)."""

from __future__ import annotations

import gc

import pytest

from powerx_upgrade.reporting import build_report, store_reports
from powerx_upgrade.reporting import model as model_module
from powerx_upgrade.reporting.collector import collector_paused
from tests.reporting.scenarios import RUN_ID, case_b, frozen_ledger

pytestmark = pytest.mark.unit


@pytest.fixture
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_the_collector_runs_again_after_the_block_even_when_it_raises(collector_on):
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_nested_pause_leaves_the_collector_as_the_outermost_found_it(collector_on):
    with collector_paused():
        with collector_paused():
            pass
        assert not gc.isenabled()  # the inner block does not turn it back on
    assert gc.isenabled()
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()  # a caller that had it off keeps it off


def test_reading_building_and_storing_a_report_run_with_the_collector_paused(
    collector_on, tmp_path, monkeypatch
):
    seen: list[bool] = []
    real_build = model_module._build

    def build(*args, **kwargs):
        seen.append(gc.isenabled())
        return real_build(*args, **kwargs)

    monkeypatch.setattr(model_module, "_build", build)
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        case_b(book, clock)
        from powerx_upgrade.reporting import RunRecords

        real_rows = book.action_rows

        def rows(run_id):
            seen.append(gc.isenabled())
            return real_rows(run_id)

        monkeypatch.setattr(book, "action_rows", rows)
        records = RunRecords.from_ledger(book, RUN_ID)
    assert gc.isenabled()
    report = build_report(records)
    assert gc.isenabled()

    def chunks():
        seen.append(gc.isenabled())
        yield "{}\n"

    store_reports({"report.json": chunks()}, "p", RUN_ID, base=str(tmp_path / "out"))

    assert seen == [False, False, False]
    assert gc.isenabled()
    assert report["outcome"] == "rolled_back"
