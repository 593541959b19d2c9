"""Files that hold secrets or audit data are created readable by their owner only (0600), from
their first byte: the ledger's SQLite file (and its -wal/-shm), the dev stack's metadata
database, passwords file and secrets, the demo's approval secret and signing key (issue 15:
airflow.db and powerx_ledger.db were created 0644)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from powerx_upgrade.ledger import Ledger

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The usual umask (022): without our care, new files would be world-readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_sqlite_ledger_and_its_wal_files_are_0600(tmp_path):
    path = tmp_path / "deep" / "powerx_ledger.db"
    book = Ledger(f"sqlite:///{path}")
    book.start_run("r1", dag_id="d", plan_id="p", plugin="x", target_version="1.0.0")
    files = [p for p in path.parent.iterdir() if p.name.startswith("powerx_ledger.db")]
    assert path in files and len(files) >= 2, files  # the database and its WAL
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    book.close()


def test_an_existing_ledger_file_keeps_its_mode(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(f"sqlite:///{path}").close()
    path.chmod(0o640)  # an operator's choice
    Ledger(f"sqlite:///{path}").close()
    assert mode(path) == 0o640


def test_the_dev_stack_home_has_its_database_and_secrets_0600(tmp_path):
    from powerx_dev.devstack.environment import StackSettings, _secret, prepare_home

    home = tmp_path / "airflow"
    prepare_home(StackSettings(home, "127.0.0.1", 1, "admin", "pw", "id"))
    _secret(home, "jwt")
    for name in ("airflow.db", "simple_auth_manager_passwords.json", "devstack-secrets.json"):
        assert mode(home / name) == 0o600, name


def test_the_demo_approval_secret_and_signing_key_are_0600(tmp_path):
    from powerx_dev import demo

    settings = demo.DemoSettings(
        home=tmp_path, case=demo.CASES["happy"], scenario_path=tmp_path / "s.yaml"
    )
    demo.demo_approval_secret(settings)
    signing = demo.demo_signing(settings)
    assert mode(settings.approval_secret_file) == 0o600
    assert mode(signing.private_key) == 0o600
