"""Preflight's artifact check against a real SQLite ledger and the TEST-ONLY keys on disk: what
it audits and alerts when it verifies, when it refuses, and what outcome a refused run gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from powerx_upgrade.ledger import Ledger
from powerx_upgrade.orchestration.signing import signing_keys
from powerx_upgrade.rollout.alerts import alerts_of
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.finalize import outcome_of
from powerx_upgrade.rollout.preflight import start_run, verify_run_artifact
from powerx_upgrade.rollout.record import Recorder
from powerx_upgrade.security.artifacts import (
    ArtifactRefused,
    SigningKeyError,
    generate_keypair,
    load_public_keys,
)
from tests.signing import SIGNING_KEYS, TEST_KEY_ID, sign

pytestmark = pytest.mark.unit

SHA = "ab" * 32


@pytest.fixture
def book(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")


def context(signature: str | None, *, version: str = "2.4.0", dry_run: bool = False, sha=SHA):
    artifact = {"uri": "s3://releases/crm-sync.tgz", "sha256": sha, "signature": signature}
    return RunContext(
        run_id="run-1",
        dag_id="plugin_upgrade__p",
        plan_id="p",
        plugin="crm-sync",
        target_version=version,
        artifact={k: v for k, v in artifact.items() if v},
        dry_run=dry_run,
    )


def trusted() -> dict:
    return load_public_keys(SIGNING_KEYS)


def check(book: Ledger, ctx: RunContext, load=trusted, counted=None):
    start_run(book, ctx)
    count = (lambda name, tags: counted.append((name, tags))) if counted is not None else None
    return verify_run_artifact(Recorder(book), ctx, load, channels=["slack:#x"], count=count)


def events(book: Ledger) -> list[str]:
    return [r.event for r in book.audit_records("run-1")]


def test_a_signed_artifact_is_verified_and_audited_with_the_key_id(book):
    result = check(book, context(sign("2.4.0", SHA)))
    assert result["verified"] is True and result["key_id"] == TEST_KEY_ID
    (record,) = book.audit_records("run-1")
    assert record.event == "artifact.verified"
    assert record.payload["details"] == {
        "key_id": TEST_KEY_ID,
        "plugin": "crm-sync",
        "version": "2.4.0",
        "sha256": SHA,
        "uri": "s3://releases/crm-sync.tgz",
    }
    assert alerts_of(book, "run-1") == []


def test_an_unsigned_artifact_is_refused_audited_and_alerted_critical_once(book):
    counted: list = []
    with pytest.raises(ArtifactRefused) as refused:
        check(book, context(None), counted=counted)
    assert refused.value.code == "unsigned"
    assert events(book) == ["artifact.refused", "alert.artifact_unverified"]
    details = book.audit_records("run-1")[0].payload["details"]
    assert details["code"] == "unsigned" and details["version"] == "2.4.0"
    assert details["sha256"] == SHA and details["uri"] == "s3://releases/crm-sync.tgz"
    (alert,) = alerts_of(book, "run-1")
    assert alert["rule"] == "artifact_unverified" and alert["severity"] == "critical"
    assert "before any tenant was touched" in alert["message"] and alert["batch"] is None
    assert counted == [
        (
            "version.upgrade.alert_total",
            {"plan": "p", "plugin": "crm-sync", "rule": "artifact_unverified", "batch": "-"},
        )
    ]


def test_a_signature_made_for_another_version_is_a_mismatch_naming_the_keys_tried(book):
    with pytest.raises(ArtifactRefused) as refused:
        check(book, context(sign("2.4.0", SHA), version="2.5.0"))
    assert refused.value.code == "mismatch"
    assert f"tried: {TEST_KEY_ID}" in refused.value.message
    assert "crm-sync 2.5.0" in refused.value.message
    assert events(book) == ["artifact.refused", "alert.artifact_unverified"]


def test_a_refused_run_ends_failed_before_planning_and_says_why(book):
    ctx = context(sign("2.4.0", "cd" * 32))  # signed for another digest
    with pytest.raises(ArtifactRefused):
        check(book, ctx)
    outcome, detail = outcome_of(book, platform=None, ctx=ctx)
    assert outcome == "failed"
    assert detail["note"].startswith("preflight refused the artifact (mismatch)")
    assert "does not verify" in detail["artifact_refused"]


def test_a_refused_dry_run_fails_too(book):
    ctx = context(None, dry_run=True)
    with pytest.raises(ArtifactRefused):
        check(book, ctx)
    assert outcome_of(book, platform=None, ctx=ctx)[0] == "failed"


def test_a_dry_run_without_an_artifact_skips_the_check_and_says_so(book):
    ctx = context(None, dry_run=True, sha=None)
    result = check(book, ctx)
    assert result == {
        "verified": False,
        "skipped": "dry run without an artifact: nothing to verify",
    }
    assert events(book) == []


def test_keys_that_cannot_load_refuse_the_run_naming_the_bad_file(book, tmp_path):
    bad = tmp_path / "keys"
    bad.mkdir()
    (bad / "broken.pub").write_text("not a key")

    with pytest.raises(ArtifactRefused) as refused:
        check(book, context(sign("2.4.0", SHA)), load=lambda: load_public_keys(bad))
    assert refused.value.code == "no_keys"
    assert "broken.pub is not a PEM" in refused.value.message
    assert events(book) == ["artifact.refused", "alert.artifact_unverified"]


def test_no_keys_at_all_is_refused(book):
    with pytest.raises(ArtifactRefused) as refused:
        check(book, context(sign("2.4.0", SHA)), load=dict)
    assert refused.value.code == "no_keys"


# -- where the keys come from (orchestration/signing.py) ----------------------------------


def _connection(monkeypatch: pytest.MonkeyPatch, public_keys: object) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_POWERX_SIGNING",
        json.dumps({"conn_type": "generic", "extra": {"public_keys": public_keys}}),
    )


def test_keys_come_from_the_env_directory_plus_the_connection(monkeypatch):
    monkeypatch.setenv("POWERX_UPGRADE_SIGNING_KEYS", str(SIGNING_KEYS))
    _connection(monkeypatch, {"release-2026": generate_keypair()[1].decode()})
    assert sorted(signing_keys()) == ["powerx-test-only", "release-2026"]


def test_without_the_env_the_config_dirs_signing_keys_folder_is_used(monkeypatch, tmp_path):
    config = tmp_path / "config"
    (config / "signing_keys").mkdir(parents=True)
    (config / "signing_keys" / "ops.pub").write_bytes(generate_keypair()[1])
    monkeypatch.delenv("POWERX_UPGRADE_SIGNING_KEYS", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_POWERX_SIGNING", raising=False)
    monkeypatch.setenv("POWERX_UPGRADE_CONFIG", str(config))
    assert list(signing_keys()) == ["ops"]
    (config / "signing_keys" / "ops.pub").unlink()
    (config / "signing_keys").rmdir()  # absent default folder: no keys, no error
    assert signing_keys() == {}


def test_a_named_keys_directory_that_does_not_exist_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("POWERX_UPGRADE_SIGNING_KEYS", str(tmp_path / "missing"))
    with pytest.raises(SigningKeyError, match="missing' does not exist"):
        signing_keys()


def test_a_bad_connection_key_is_an_error_naming_the_connection(monkeypatch):
    monkeypatch.setenv("POWERX_UPGRADE_SIGNING_KEYS", str(SIGNING_KEYS))
    _connection(monkeypatch, {"ops": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"})
    with pytest.raises(SigningKeyError, match=r"connection powerx_signing public_keys\.ops"):
        signing_keys()
