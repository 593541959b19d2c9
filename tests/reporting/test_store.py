"""Storing reports under `<base>/<plan_id>/<run folder>/` through Airflow's ObjectStoragePath:
one folder per run id, never shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from powerx_upgrade.reporting.store import (
    REPORTS_ENV,
    legacy_report_dir,
    report_dir,
    reports_base,
    run_segment,
    safe_segment,
    store_reports,
)

pytestmark = pytest.mark.unit

RUN_ID = "manual__2026-03-07T02:00:00+00:00"
FILES = {"report.json": "{}\n", "report.md": "# r\n", "report.html": "<p>r</p>\n"}


def test_run_ids_become_safe_path_segments():
    assert safe_segment(RUN_ID) == "manual__2026-03-07T02_00_00_00_00"
    assert safe_segment("scheduled__2026-03-07T02:00:00.123+08:00") == (
        "scheduled__2026-03-07T02_00_00.123_08_00"
    )
    assert safe_segment("../../etc/passwd") == "_.._etc_passwd"
    assert safe_segment("..") == "_"


def test_base_comes_from_the_environment_else_airflow_home(monkeypatch, tmp_path):
    monkeypatch.delenv(REPORTS_ENV, raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    assert reports_base() == f"file://{tmp_path}/home/reports"
    monkeypatch.setenv(REPORTS_ENV, "s3://bucket/grey-reports/")
    assert reports_base() == "s3://bucket/grey-reports"
    assert report_dir("crm-sync", RUN_ID) == (
        "s3://bucket/grey-reports/crm-sync/manual__2026-03-07T02_00_00_00_00-d949fc73a6"
    )
    assert reports_base("relative/dir").startswith("file:///")


def test_files_land_under_plan_and_run(monkeypatch, tmp_path):
    monkeypatch.setenv(REPORTS_ENV, f"file://{tmp_path}")
    written = store_reports({**FILES, "postmortem.md": "# pm\n"}, "crm-sync-e2e", RUN_ID)
    folder = tmp_path / "crm-sync-e2e" / "manual__2026-03-07T02_00_00_00_00-d949fc73a6"
    assert sorted(p.name for p in folder.iterdir()) == [
        "postmortem.md",
        "report.html",
        "report.json",
        "report.md",
    ]
    assert written["report.html"] == f"file://{folder}/report.html"
    assert (folder / "report.md").read_text(encoding="utf-8") == "# r\n"


def test_writing_again_replaces_the_files(tmp_path):
    base = str(tmp_path)
    store_reports(FILES, "p", "r", base=base)
    store_reports({**FILES, "report.md": "# second\n"}, "p", "r", base=base)
    assert (Path(tmp_path) / "p" / run_segment("r") / "report.md").read_text(
        encoding="utf-8"
    ) == "# second\n"


TWINS = (
    "manual__2026-03-07T02:00:00+00:00",
    "manual__2026-03-07T02_00_00+00:00",
    "manual__2026-03-07T02:00:00_00:00",
    "manual__2026-03-07T02_00_00_00_00",
)
"""Four run ids that `safe_segment` alone maps to one folder."""


def test_run_ids_differing_only_in_colon_plus_underscore_get_their_own_folders(tmp_path):
    assert len({safe_segment(run_id) for run_id in TWINS}) == 1
    for run_id in TWINS:
        store_reports({"report.md": f"# {run_id}\n"}, "crm", run_id, base=str(tmp_path))
    folders = sorted(p.name for p in (tmp_path / "crm").iterdir())
    assert folders == sorted(run_segment(run_id) for run_id in TWINS)
    assert len(folders) == len(TWINS)
    for run_id in TWINS:
        text = (tmp_path / "crm" / run_segment(run_id) / "report.md").read_text(encoding="utf-8")
        assert text == f"# {run_id}\n"


def test_the_api_reader_finds_new_folders_and_old_layout_folders(tmp_path):
    from powerx_upgrade.api.views import read_stored

    base = str(tmp_path)
    store_reports({"report.md": "# new\n"}, "crm", TWINS[0], base=base)
    assert read_stored("crm", TWINS[0], "report.md", base=base) == "# new\n"
    assert read_stored("crm", TWINS[1], "report.md", base=base) is None
    old = tmp_path / "crm" / safe_segment("scheduled__old:run")
    old.mkdir(parents=True)
    (old / "report.md").write_text("# old\n", encoding="utf-8")
    assert legacy_report_dir("crm", "scheduled__old:run", base).endswith(old.name)
    assert read_stored("crm", "scheduled__old:run", "report.md", base=base) == "# old\n"
