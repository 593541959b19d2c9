"""report.json as streamed (issue 16): the outline indented, per-tenant lists and objects in
compact lines of the C encoder; it must parse to exactly the document the whole render gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from powerx_upgrade.reporting import render as render_module
from powerx_upgrade.reporting import (
    render_reports,
    report_from_ledger,
    store_reports,
    stream_reports,
)
from powerx_upgrade.reporting.render import json_chunks, to_json
from tests.reporting.scenarios import RUN_ID, Batch, fill_run, frozen_ledger

pytestmark = pytest.mark.unit


@pytest.fixture
def fleet_report(tmp_path, monkeypatch):
    """120 tenants in four batches, a pause at batch 2, a failing last batch rolled back with
    two tenants not back: every per-tenant list is longer than `render.BIG`."""
    tenants = [f"t-{n:03d}" for n in range(1, 121)]
    batches = [
        Batch(tenants[:6], "canary"),
        Batch(tenants[6:30], "wave-2", verdict="inconclusive"),
        Batch(tenants[30:60], "wave-3", failed=("t-040",)),
        Batch(tenants[60:], "rest", verdict="fail", error_rate=0.09),
    ]
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        fill_run(book, clock, batches, pause_at=2, broken=("t-070", "t-101"))
        report = report_from_ledger(book, RUN_ID, airflow_base_url="http://airflow:8080")
    assert len(report["batches"]) == 4
    assert report["rollback"]["counts"]["targets"] > render_module.BIG
    assert len(report["tenants"]["versions_before"]) > render_module.BIG
    return report


def test_streamed_report_json_parses_to_the_document_of_the_whole_render(fleet_report, tmp_path):
    whole = render_reports(fleet_report)
    written = store_reports(stream_reports(fleet_report), "p", RUN_ID, base=str(tmp_path))
    streamed = Path(written["report.json"].removeprefix("file://")).read_text(encoding="utf-8")

    assert json.loads(streamed) == json.loads(whole["report.json"]) == fleet_report
    assert streamed == whole["report.json"] == to_json(fleet_report)


def test_per_tenant_rows_are_written_in_compact_lines_and_the_outline_indented(fleet_report):
    text = to_json(fleet_report)
    lines = text.splitlines()

    assert lines[0] == "{" and lines[-1] == "}" and text.endswith("}\n")
    assert '  "schema_version": 1,' in lines  # the outline as json.dumps(indent=2) writes it
    # the rollback's 114 tenants: one line (ROWS_PER_LINE rows), not 11 lines per tenant
    rows = [line for line in lines if line.lstrip().startswith('{"tenant": ')]
    assert len(rows) == 1
    assert json.loads(f"[{rows[0]}]") == fleet_report["rollback"]["tenants"]


def test_rows_over_several_lines_keep_every_row_once_and_in_order(fleet_report, monkeypatch):
    monkeypatch.setattr(render_module, "ROWS_PER_LINE", 7)
    monkeypatch.setattr(render_module, "BIG", 3)
    text = "".join(json_chunks(fleet_report))

    assert json.loads(text) == fleet_report
    assert list(json.loads(text)["tenants"]["versions_before"]) == list(
        fleet_report["tenants"]["versions_before"]
    )


@pytest.mark.parametrize(
    "value",
    [
        {},
        [],
        {"a": [], "b": {}, "c": [1, 2.5, None, True, "é"], "d": {"e": {"f": [{"g": []}]}}},
        {1: "one", 2.5: "half", None: "null", False: "no", "n": float("inf")},
        {"rows": [{"t": n, "x": [n, {"y": None}]} for n in range(120)], "t": (1, 2)},
        {f"k{n}": {"v": n, "w": [n]} for n in range(60)},
    ],
)
def test_any_json_value_streams_to_the_text_json_dumps_parses_the_same(value):
    text = "".join(json_chunks(value))

    assert json.loads(text) == json.loads(json.dumps(value))


def test_a_small_document_is_the_text_of_json_dumps_with_indent_2():
    document = {"a": {"b": [1, {"c": "d"}], "e": []}, "f": "ü", "when": object.__name__}

    assert to_json(document) == json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def test_values_json_cannot_hold_are_written_as_text_as_before():
    from datetime import UTC, datetime

    at = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)

    assert json.loads(to_json({"at": at, "rows": [at] * 60})) == {
        "at": str(at),
        "rows": [str(at)] * 60,
    }
