"""The sandbox is a stand-alone simulator: importing and serving it never pulls in Airflow."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def test_the_sandbox_package_does_not_import_airflow():
    code = (
        "import sys\n"
        "import powerx_dev.sandbox.app, powerx_dev.sandbox.testing\n"
        "import powerx_dev.sandbox.server, powerx_dev.cli.sandbox\n"
        "leaked = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
        "print(leaked[:5])\n"
        "sys.exit(1 if leaked else 0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
