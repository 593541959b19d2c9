"""The type checker passes: mypy as configured in pyproject.toml (`[tool.mypy]`: strict for
domain/, rollout/, ledger/ and security/), run the way a developer runs it (`uv run mypy`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.typecheck

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_type_error_in_the_strictly_typed_packages():
    result = subprocess.run(
        [sys.executable, "-m", "mypy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"mypy failed:\n{result.stdout}{result.stderr}"
