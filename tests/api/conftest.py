"""The control-plane app with a real SQLite ledger, a real config directory and real files;
only Airflow's auth manager is stood in for (TokenAuth below), since it needs an api-server.
What Airflow's side does is proved on the live stack (tests/stack/test_control_plane_stack.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from powerx_upgrade.api.app import create_app
from powerx_upgrade.api.auth import Caller, presented_token
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.security.approval import ApprovalSettings, issue_approval
from tests.conftest import ROOT

STACK_CONFIG = ROOT / "tests" / "fixtures" / "stack_config"
SECRET = "api-tests-shared-secret-0123456789abcdef"
PLAN = "crm-sync-stack"
DAG = f"plugin_upgrade__{PLAN}"
ADMIN = {"Authorization": "Bearer admin-token"}
VIEWER = {"Authorization": "Bearer viewer-token"}
NOW = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)


class TokenAuth:
    """Stands in for Airflow's auth manager: two known tokens, an admin and a viewer."""

    users: ClassVar[dict[str, tuple[str, str]]] = {
        "admin-token": ("alice", "admin"),
        "viewer-token": ("victor", "viewer"),
    }

    async def authenticate(self, request: Request) -> Caller:
        token, source = presented_token(request)
        if token is None:
            raise Refused(401, "not_authenticated", "no Airflow token")
        if token not in self.users:
            raise Refused(403, "invalid_token", "the Airflow token was refused: Invalid JWT")
        name, role = self.users[token]
        return Caller(name=name, user=role, token=token, source=source)

    def may(self, caller: Caller, *, method: str, dag_id: str, entity: Any) -> bool:
        return caller.user == "admin" or method == "GET"


@dataclass
class Api:
    client: TestClient
    ledger: Ledger
    config: Path
    reports: Path

    def token(self, action: str, *, plan: str = PLAN, run: str | None = None, **kw: Any) -> str:
        kw.setdefault("now", NOW - timedelta(minutes=1))
        return issue_approval(
            kw.pop("key", SECRET),
            subject="ops-approver",
            action=action,
            plan_id=plan,
            run_id=run,
            **kw,
        )

    def refusals(self) -> list[dict[str, Any]]:
        """The details of every `api.refused` record (the record itself is in the audit
        service's shape: see test_audit_records_fit_the_audit_service)."""
        return [
            r.payload["details"] for r in self.ledger.audit_records() if r.event == "api.refused"
        ]

    def accepted(self) -> list[dict[str, Any]]:
        return [
            r.payload["details"] for r in self.ledger.audit_records() if r.event == "api.accepted"
        ]

    def start_run(self, run_id: str = "manual__r1", plan: str = PLAN, **kw: Any) -> str:
        self.ledger.start_run(
            run_id,
            dag_id=f"plugin_upgrade__{plan}",
            plan_id=plan,
            plugin="crm-sync",
            target_version="2.4.0",
            **kw,
        )
        return run_id


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    config = tmp_path / "config"
    shutil.copytree(STACK_CONFIG, config)
    book = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    reports = tmp_path / "reports"
    settings = ApiSettings(
        ledger=lambda: book,
        config_dir=lambda: config,
        approval_settings=lambda: ApprovalSettings(secret=SECRET),
        # nothing listens there: a route that needs Airflow's REST API says so
        airflow_url=lambda: "http://127.0.0.1:9",
        auth=TokenAuth(),
        now=lambda: NOW,
        reports_base=str(reports),
        hitl_settle=0,
    )
    with TestClient(create_app(settings)) as client:
        yield Api(client, book, config, reports)
    book.close()
