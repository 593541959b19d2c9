"""The report's link: the control-plane API's view (behind Airflow's login) when the
api-server's URL is known, $POWERX_UPGRADE_REPORTS_URL when set, else the stored file."""

from __future__ import annotations

import pytest

from powerx_upgrade.reporting.store import REPORTS_ENV, REPORTS_URL_ENV, report_link

pytestmark = pytest.mark.unit
RUN = "manual__2026-03-07T02:00:00+00:00"


def test_the_link_is_the_api_report_view_when_the_api_server_url_is_known(monkeypatch):
    monkeypatch.delenv(REPORTS_URL_ENV, raising=False)
    base = "https://airflow.example/"
    assert report_link("crm", RUN, api_base_url=base) == (
        "https://airflow.example/internal/version/upgrade/runs/"
        "manual__2026-03-07T02%3A00%3A00%2B00%3A00/report"
    )
    assert report_link("crm", RUN, "report.json", api_base_url=base).endswith("/report?format=json")
    # the post-mortem has no API format: its stored file
    assert report_link("crm", RUN, "postmortem.md", api_base_url=base).startswith("file://")


def test_a_served_reports_url_wins_and_without_either_the_link_is_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv(REPORTS_URL_ENV, "https://reports.example/grey")
    assert report_link("crm", RUN, api_base_url="https://airflow.example").startswith(
        "https://reports.example/grey/crm/"
    )
    monkeypatch.delenv(REPORTS_URL_ENV)
    monkeypatch.setenv(REPORTS_ENV, str(tmp_path))
    assert report_link("crm", RUN) == (
        f"file://{tmp_path}/crm/manual__2026-03-07T02_00_00_00_00-d949fc73a6/report.html"
    )


def test_the_operator_link_follows_airflows_api_base_url(monkeypatch):
    from powerx_upgrade.orchestration.operators.report import api_base_url

    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    assert api_base_url() is None
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080")
    assert api_base_url() == "http://127.0.0.1:8080"
