"""Run reports: a versioned document built from the ledger, rendered to JSON, Markdown, HTML and
a post-mortem, and stored under a configurable base. Only `store_reports` touches Airflow."""

from powerx_upgrade.reporting.findings import POSTMORTEM_OUTCOMES, needs_postmortem
from powerx_upgrade.reporting.model import (
    SCHEMA_VERSION,
    RunIdentity,
    RunRecords,
    build_report,
    policy_options,
    report_from_ledger,
)
from powerx_upgrade.reporting.render import render_reports, stream_reports, templates_location
from powerx_upgrade.reporting.store import report_dir, report_link, reports_base, store_reports

__all__ = [
    "POSTMORTEM_OUTCOMES",
    "SCHEMA_VERSION",
    "RunIdentity",
    "RunRecords",
    "build_report",
    "needs_postmortem",
    "policy_options",
    "render_reports",
    "report_dir",
    "report_from_ledger",
    "report_link",
    "reports_base",
    "store_reports",
    "stream_reports",
    "templates_location",
]
