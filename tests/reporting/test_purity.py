"""Building and rendering reports needs no Airflow; only storing them does (ObjectStoragePath)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_building_and_rendering_a_report_loads_no_airflow_module():
    code = (
        "import sys\n"
        "from powerx_upgrade.reporting import RunIdentity, RunRecords, build_report, render_reports\n"
        "doc = build_report(RunRecords(None), identity=RunIdentity('r', 'd', 'p', error='x'))\n"
        "assert set(render_reports(doc)) >= {'report.json', 'report.md', 'report.html'}\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
