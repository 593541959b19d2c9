"""The `powerx_approval` connection read through Airflow (env `AIRFLOW_CONN_POWERX_APPROVAL`)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from powerx_upgrade.orchestration.approvals import approval_settings
from powerx_upgrade.security.approval import (
    ApprovalRefused,
    issue_approval,
    signing_key,
    verify_approval,
)

pytestmark = pytest.mark.dags

SECRET = "conn-shared-secret-0123456789abcdefXYZ"
ENV = "AIRFLOW_CONN_POWERX_APPROVAL"


def set_conn(monkeypatch, **fields) -> None:
    monkeypatch.setenv(ENV, json.dumps({"conn_type": "generic", **fields}))


def check(tok, settings):
    return verify_approval(
        tok, settings, operation="rollback", plan_id="p", run_id=None, now=datetime.now(UTC)
    )


def test_a_shared_secret_connection_verifies_tokens_signed_with_it(monkeypatch):
    set_conn(
        monkeypatch,
        password=SECRET,
        extra={
            "audience": "ops-approvals",
            "issuer": "https://approve.example",
            "leeway_seconds": 5,
        },
    )
    settings = approval_settings()
    assert settings.secret == SECRET
    assert (settings.audience, settings.issuer, settings.leeway_seconds) == (
        "ops-approvals",
        "https://approve.example",
        5,
    )
    good = issue_approval(
        SECRET,
        subject="a",
        action="rollback",
        plan_id="p",
        audience="ops-approvals",
        issuer="https://approve.example",
    )
    assert check(good, settings).subject == "a"
    wrong_aud = issue_approval(SECRET, subject="a", action="rollback", plan_id="p")
    with pytest.raises(ApprovalRefused) as caught:
        check(wrong_aud, settings)
    assert caught.value.code == "wrong_audience"


def test_a_public_key_connection_verifies_eddsa_tokens(monkeypatch):
    private = ed25519.Ed25519PrivateKey.generate()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    set_conn(monkeypatch, extra={"public_key": public_pem})
    settings = approval_settings()
    assert settings.secret is None and settings.audience == "powerx-grey-upgrade"
    key, algorithm = signing_key(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tok = issue_approval(key, algorithm=algorithm, subject="b", action="rollback", plan_id="p")
    assert check(tok, settings).subject == "b"


def test_no_connection_gives_none_and_every_token_is_refused_as_not_configured(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert approval_settings() is None
    with pytest.raises(ApprovalRefused) as caught:
        check(issue_approval(SECRET, subject="a", action="rollback", plan_id="p"), None)
    assert caught.value.code == "not_configured"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"secret": "x"}, "unknown extra key 'secret'"),
        ({"leeway_seconds": "soon"}, "'leeway_seconds'"),
        ({"leeway_seconds": 3600}, "from 0 to 600"),
        ({"audience": 5}, "'audience' must be a string"),
    ],
)
def test_a_broken_connection_is_not_configured_and_names_the_field(monkeypatch, extra, fragment):
    set_conn(monkeypatch, password=SECRET, extra=extra)
    settings = approval_settings()
    assert not settings.configured and fragment in settings.problem
    with pytest.raises(ApprovalRefused) as caught:
        check(issue_approval(SECRET, subject="a", action="rollback", plan_id="p"), settings)
    assert caught.value.code == "not_configured"
    assert fragment in caught.value.message
    assert SECRET not in caught.value.message and SECRET not in repr(settings)


def test_the_secret_is_masked_in_logs_once_read(monkeypatch, caplog):
    from airflow._shared.secrets_masker import redact

    secret = "never-log-this-approval-secret-42"
    set_conn(monkeypatch, password=secret)
    approval_settings()
    assert secret not in str(redact(f"the secret is {secret}"))


def test_falls_back_to_the_task_sdk_when_the_model_lookup_fails(monkeypatch):
    from airflow.models.connection import Connection

    def broken(cls, conn_id, team_name=None):
        raise RuntimeError("no metadata database here")

    monkeypatch.setattr(Connection, "get_connection_from_secrets", classmethod(broken))
    set_conn(monkeypatch, password=SECRET)
    assert approval_settings().secret == SECRET


def test_the_secret_never_reaches_the_log_output(monkeypatch, caplog):
    set_conn(monkeypatch, password=SECRET)
    with caplog.at_level(logging.DEBUG):
        settings = approval_settings()
    assert SECRET not in caplog.text
    assert SECRET not in repr(settings)
