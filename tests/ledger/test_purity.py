"""The ledger stays free of Airflow: the DAG side hands it a URL, nothing more."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import powerx_upgrade.ledger

pytestmark = pytest.mark.unit

LEDGER = Path(powerx_upgrade.ledger.__file__).parent


def test_ledger_sources_do_not_import_airflow():
    offenders = []
    for path in sorted(LEDGER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            offenders += [
                f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] == "airflow"
            ]
    assert offenders == []


def test_importing_the_ledger_loads_no_airflow_module():
    code = (
        "import sys, powerx_upgrade.ledger\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
