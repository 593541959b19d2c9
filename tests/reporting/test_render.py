"""Rendering: the same document as JSON, Markdown, self-contained HTML and a post-mortem."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from powerx_upgrade.reporting import (
    RunIdentity,
    RunRecords,
    build_report,
    render_reports,
    report_from_ledger,
    templates_location,
)
from powerx_upgrade.reporting.render import TEMPLATES_ENV, TemplatesNotFound
from tests.conftest import ROOT
from tests.reporting.scenarios import DAG, PLAN, RUN_ID, T0, Batch, case_b, fill_run, frozen_ledger

pytestmark = pytest.mark.unit

SCRIPT = "<script>alert(1)</script>"


class _Tags(HTMLParser):
    """Every start tag and attribute of a page, to prove what it loads and runs."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


@pytest.fixture
def case_b_files(tmp_path, monkeypatch):
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        case_b(book, clock)
        report = report_from_ledger(book, RUN_ID, airflow_base_url="http://airflow:8080")
    return report, render_reports(report)


def test_a_rolled_back_run_renders_all_four_files(case_b_files):
    report, files = case_b_files
    assert set(files) == {"report.json", "report.md", "report.html", "postmortem.md"}
    assert json.loads(files["report.json"]) == report


def test_a_promoted_run_has_no_postmortem(tmp_path, monkeypatch):
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        fill_run(book, clock, [Batch(["t-01"], "canary"), Batch(["t-02"], "rest")])
        files = render_reports(report_from_ledger(book, RUN_ID))
    assert set(files) == {"report.json", "report.md", "report.html"}
    assert "Promoted." in files["report.html"]


def test_html_is_one_self_contained_file_without_scripts(case_b_files):
    _, files = case_b_files
    html = files["report.html"]
    tags = tags_of(html)
    names = {tag for tag, _ in tags}
    assert "script" not in names and "link" not in names and "img" not in names
    assert not any("src" in attrs for _, attrs in tags)
    external = [a["href"] for t, a in tags if t == "a" and a.get("href")]
    assert (
        external
        == [
            "http://airflow:8080/dags/plugin_upgrade__crm-sync-e2e/runs/"
            "manual__2026-03-07T02%3A00%3A00%2B00%3A00"
        ]
        * 2
    )  # header and run details: the only links, both to the run in Airflow
    csp = next(a for t, a in tags if t == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in (csp["content"] or "")


def test_html_draws_the_timeline_and_a_chart_per_gate_check(case_b_files):
    _, files = case_b_files
    html = files["report.html"]
    assert html.count("<svg") == 1 + 3 * 2  # timeline + 3 batches x 2 checks
    assert 'aria-label="timeline of batches, pauses and rollback"' in html
    assert "error_rate (batch)" in html and "limit 5.00%" in html
    assert ">rollback</text>" in html  # the rollback lane
    # every value against its limit in the measurements table
    assert re.search(r"9\.00%.*?</td>\s*<td class=\"num\">5\.00%</td>", html, re.S)


def test_html_escapes_a_hostile_tenant_label_and_reason(tmp_path, monkeypatch):
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        fill_run(
            book,
            clock,
            [Batch(["t-01", SCRIPT], "canary", verdict="fail", error_rate=0.2)],
            reason=f"fix {SCRIPT}",
            triggered_by=f'"><img src=x onerror=alert(1)>{SCRIPT}',
        )
        report = report_from_ledger(
            book,
            RUN_ID,
            alerts=[{"rule": SCRIPT, "severity": "critical", "batch": 1, "message": SCRIPT}],
        )
        files = render_reports(report)
    html = files["report.html"]
    assert SCRIPT not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert {tag for tag, _ in tags_of(html)}.isdisjoint({"script", "img"})
    # Markdown: no raw tag either (a Markdown viewer would pass it through as HTML)
    for name in ("report.md", "postmortem.md"):
        assert SCRIPT not in files[name] and "<img" not in files[name]
        assert "&lt;script>" in files[name]


def test_markdown_tables_survive_pipes_and_newlines_in_free_text(tmp_path, monkeypatch):
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        fill_run(book, clock, [Batch(["t-01"], "canary")], reason="a | b\nc")
        md = render_reports(report_from_ledger(book, RUN_ID))["report.md"]
    assert "| Reason | a \\| b c |" in md


def test_postmortem_has_timeline_impact_trip_deviations_and_checklist(case_b_files):
    _, files = case_b_files
    postmortem = files["postmortem.md"]
    for heading in (
        "## Summary",
        "## Impact",
        "## What tripped",
        "## Metric deviations from the pre-upgrade baseline",
        "## Timeline (UTC)",
        "## Follow-up",
    ):
        assert heading in postmortem
    assert "Tenants exposed to 2.5.0: **10** of 10 selected" in postmortem
    assert "**gate, batch 3**" in postmortem
    assert "| 3 | error_rate | batch | - | 1.00% | 9.00% | +800% | 5.00% | fail |" in postmortem
    assert "- [ ] Find the cause of the error_rate breach in batch 3 on 2.5.0" in postmortem


def test_markdown_report_lists_figures_batches_and_rollback(case_b_files):
    _, files = case_b_files
    md = files["report.md"]
    assert (
        "| Upgrade success rate (tenants on target / selected) | 0.0% (0/10) | 98% | **no** |" in md
    )
    assert "| Batch success rate (batches passed / run) | 66.7% (2/3) | 95% | **no** |" in md
    assert "| Rollback duration | 42.0s | 3m 00s | yes |" in md
    assert "| 3 | rest | 5 |" in md and "| fail | rollback |" in md
    assert "## Rollback" in md and "10 of 10 rolled back, 10 verified, 0 not back" in md


def test_a_run_refused_in_preflight_still_renders(tmp_path):
    identity = RunIdentity(
        run_id=RUN_ID,
        dag_id=DAG,
        plan_id=PLAN,
        plugin="crm-sync",
        target_version="2.5.0",
        reason=SCRIPT,
        error="run conf for plan 'crm-sync-e2e': unknown conf key(s) colour",
    )
    report = build_report(RunRecords(None), identity=identity, generated_at=T0)
    files = render_reports(report)
    assert set(files) == {"report.json", "report.md", "report.html", "postmortem.md"}
    assert "The run ended before its batches." in files["report.html"]
    assert "unknown conf key(s) colour" in files["report.html"]
    assert SCRIPT not in files["report.html"]
    assert "No batch was planned." in files["report.md"]
    assert "- **Ended early**: run conf for plan" in files["postmortem.md"]


def test_templates_come_from_an_explicit_path_or_the_environment(tmp_path, monkeypatch):
    own = tmp_path / "templates"
    shutil.copytree(ROOT / "include" / "templates", own)
    (own / "report.md.j2").write_text("custom {{ report.outcome }}\n", encoding="utf-8")
    report = build_report(
        RunRecords(None), identity=RunIdentity(run_id="r", dag_id="d", plan_id="p")
    )
    assert render_reports(report, templates=own)["report.md"] == "custom failed\n"
    monkeypatch.setenv(TEMPLATES_ENV, str(own))
    assert templates_location() == own
    monkeypatch.setenv(TEMPLATES_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(TemplatesNotFound, match="nowhere"):
        templates_location()


def test_templates_are_found_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(TEMPLATES_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert templates_location() == ROOT / "include" / "templates"


def test_streamed_files_are_the_rendered_files_written_chunk_by_chunk(case_b_files, tmp_path):
    from powerx_upgrade.reporting import store_reports, stream_reports
    from powerx_upgrade.reporting.render import to_json

    report, files = case_b_files
    streams = stream_reports(report)
    assert set(streams) == set(files)
    assert all(not isinstance(chunks, str) for chunks in streams.values())  # produced lazily
    written = store_reports(streams, "p", RUN_ID, base=str(tmp_path))
    for name, uri in written.items():
        assert Path(uri.removeprefix("file://")).read_text(encoding="utf-8") == files[name]
    assert files["report.json"] == to_json(report)
