"""The domain package stays free of Airflow and HTTP clients (DESIGN.md: a pure core)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import powerx_upgrade.domain

pytestmark = pytest.mark.unit

FORBIDDEN = ("airflow", "httpx", "requests", "aiohttp", "urllib3", "http", "socket", "sqlalchemy")
LIBRARIES = ("airflow", "httpx", "requests", "aiohttp", "urllib3", "sqlalchemy")
"""At run time only third-party clients count: the stdlib itself loads `socket` incidentally."""
DOMAIN = Path(powerx_upgrade.domain.__file__).parent


def test_domain_sources_import_neither_airflow_nor_http_clients():
    offenders = []
    for path in sorted(DOMAIN.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.name}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in FORBIDDEN
            ]
    assert offenders == []


def test_importing_the_domain_loads_no_airflow_or_http_module():
    code = (
        "import sys, importlib, pkgutil, powerx_upgrade.domain as d\n"
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(d.__path__, d.__name__ + '.')]\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {LIBRARIES!r})\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
