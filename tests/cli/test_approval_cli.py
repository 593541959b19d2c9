"""`powerx approval issue`: prints only a token that verifies, with the key it was given."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from powerx_upgrade.cli.main import main
from powerx_upgrade.security.approval import ApprovalRefused, ApprovalSettings, verify_approval
from tests.cli.test_plan_cli import powerx

pytestmark = pytest.mark.unit

SECRET = "cli-approval-secret-0123456789abcdefghij"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["approval", "issue", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def verify(token: str, settings: ApprovalSettings, **overrides):
    values = {
        "operation": "rollback",
        "plan_id": "crm-sync-standard",
        "run_id": "run-7",
        "require_mfa": True,
        "max_lifetime": timedelta(hours=1),
        "now": datetime.now(UTC),
    }
    return verify_approval(token, settings, **{**values, **overrides})


BASIC = ("--action", "rollback", "--plan", "crm-sync-standard", "--subject", "alice")


def test_issue_with_the_default_secret_env_prints_only_a_token(capsys, monkeypatch):
    monkeypatch.setenv("POWERX_APPROVAL_SECRET", SECRET)
    code, out, err = run(capsys, *BASIC, "--run", "run-7", "--jti", "cli-1")
    assert (code, err) == (0, "")
    token = out.strip()
    assert out == token + "\n" and token.count(".") == 2
    claims = verify(token, ApprovalSettings(secret=SECRET))
    assert (claims.jti, claims.subject, claims.run_id, claims.mfa) == (
        "cli-1",
        "alice",
        "run-7",
        True,
    )
    assert claims.expires_at - claims.issued_at == timedelta(minutes=10)


def test_ttl_no_mfa_audience_issuer_and_another_env_var(capsys, monkeypatch):
    monkeypatch.setenv("MY_APPROVAL_KEY", SECRET)
    code, out, _ = run(
        capsys,
        *BASIC,
        "--secret-env",
        "MY_APPROVAL_KEY",
        "--ttl",
        "90s",
        "--no-mfa",
        "--audience",
        "ops",
        "--issuer",
        "dev-cli",
    )
    assert code == 0
    settings = ApprovalSettings(secret=SECRET, audience="ops", issuer="dev-cli")
    claims = verify(out.strip(), settings, require_mfa=False)
    assert claims.mfa is False and claims.issuer == "dev-cli"
    assert claims.expires_at - claims.issued_at == timedelta(seconds=90)
    with pytest.raises(ApprovalRefused) as caught:
        verify(out.strip(), settings)
    assert caught.value.code == "mfa_required"


def _write_key(tmp_path, private):
    path = tmp_path / "approver.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, public.decode()


@pytest.mark.parametrize(
    "make",
    [
        ed25519.Ed25519PrivateKey.generate,
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        lambda: ec.generate_private_key(ec.SECP256R1()),
    ],
)
def test_a_key_file_picks_the_algorithm_from_the_key_type(capsys, tmp_path, make):
    path, public_pem = _write_key(tmp_path, make())
    code, out, _ = run(capsys, *BASIC, "--key-file", str(path))
    assert code == 0
    assert verify(out.strip(), ApprovalSettings(public_key=public_pem)).subject == "alice"


def test_without_a_secret_it_says_where_to_put_one(capsys, monkeypatch):
    monkeypatch.delenv("POWERX_APPROVAL_SECRET", raising=False)
    code, out, err = run(capsys, *BASIC)
    assert (code, out) == (2, "")
    assert "POWERX_APPROVAL_SECRET" in err and "--key-file" in err


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--ttl", "soon"), "invalid duration 'soon'"),
        (("--key-file", "/nonexistent/key.pem"), "--key-file /nonexistent/key.pem"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(capsys, monkeypatch, extra, fragment):
    monkeypatch.setenv("POWERX_APPROVAL_SECRET", SECRET)
    code, out, err = run(capsys, *BASIC, *extra)
    assert (code, out) == (2, "")
    assert fragment in err


def test_a_key_file_that_is_no_private_key_is_named(capsys, tmp_path):
    path = tmp_path / "public.pem"
    _, public_pem = _write_key(tmp_path, ed25519.Ed25519PrivateKey.generate())
    path.write_text(public_pem)
    code, _, err = run(capsys, *BASIC, "--key-file", str(path))
    assert code == 2 and str(path) in err and "private key" in err


def test_an_unknown_action_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["approval", "issue", "--action", "deploy", "--plan", "p", "--subject", "s"])
    assert caught.value.code == 2


def test_the_console_script_output_works_in_command_substitution(tmp_path):
    env = {**os.environ, "POWERX_APPROVAL_SECRET": SECRET}
    done = subprocess.run(
        [
            "sh",
            "-c",
            f'T="$({powerx()} approval issue --action takeover --plan "*" --subject bob)"; printf %s "$T"',
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    claims = verify(done.stdout, ApprovalSettings(secret=SECRET), operation="pause")
    assert (claims.action, claims.plan_id, claims.subject) == ("takeover", "*", "bob")
