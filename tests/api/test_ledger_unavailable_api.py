"""A control plane in front of an un-migrated ledger refuses with 503 and the reason (run
`powerx ledger upgrade`), not a bare 500; the real check of `Ledger(url)` on a real file."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from powerx_upgrade.api.app import create_app
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.ledger import Ledger, schema
from powerx_upgrade.security.approval import ApprovalSettings
from tests.api.conftest import NOW, SECRET, STACK_CONFIG, VIEWER, TokenAuth

pytestmark = pytest.mark.unit


def test_an_unmigrated_ledger_answers_503_with_the_upgrade_command(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:  # a ledger from before migrations
        conn.execute(text(f"DROP TABLE {schema.VERSION_TABLE}"))
    engine.dispose()
    settings = ApiSettings(
        ledger=lambda: Ledger(url),
        config_dir=lambda: STACK_CONFIG,
        approval_settings=lambda: ApprovalSettings(secret=SECRET),
        airflow_url=lambda: "http://127.0.0.1:9",
        auth=TokenAuth(),
        now=lambda: NOW,
        reports_base=str(tmp_path / "reports"),
        hitl_settle=0,
    )
    with TestClient(create_app(settings)) as client:
        answer = client.get("/runs/manual__r1", headers=VIEWER)
    assert answer.status_code == 503
    detail = answer.json()["detail"]
    assert detail["code"] == "ledger_not_migrated"
    assert detail["message"].endswith(f"code needs {schema.REVISION}: run powerx ledger upgrade")
