"""Approval tokens: every way a token is refused (code and message), and what an accepted one says."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from powerx_upgrade.security.approval import (
    ACTION_FOR,
    ACTIONS,
    ApprovalRefused,
    ApprovalSettings,
    issue_approval,
    peek_unverified,
    signing_key,
    verify_approval,
)

pytestmark = pytest.mark.unit

SECRET = "s3cret-shared-key-for-tests-0123456789"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
PLAN = "crm-sync-standard"
RUN = "manual__2026-11-27T12:00:00+00:00"
SETTINGS = ApprovalSettings(secret=SECRET)


def token(**overrides) -> str:
    values = {
        "subject": "alice@example.com",
        "action": "rollback",
        "plan_id": PLAN,
        "now": NOW,
    }
    return issue_approval(SECRET, **{**values, **overrides})


def verify(tok, settings=SETTINGS, **overrides):
    values = {
        "operation": "rollback",
        "plan_id": PLAN,
        "run_id": RUN,
        "require_mfa": True,
        "max_lifetime": timedelta(hours=1),
        "now": NOW,
    }
    return verify_approval(tok, settings, **{**values, **overrides})


def refused(tok, settings=SETTINGS, **overrides) -> ApprovalRefused:
    with pytest.raises(ApprovalRefused) as caught:
        verify(tok, settings, **overrides)
    if tok:
        assert tok not in str(caught.value)
        for part in tok.split("."):
            if len(part) > 8:
                assert part not in str(caught.value)
    return caught.value


def raw(payload: dict, key=SECRET, algorithm="HS256", headers=None) -> str:
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def claims(**overrides) -> dict:
    iat = int(NOW.timestamp())
    values = {
        "aud": "powerx-grey-upgrade",
        "sub": "alice@example.com",
        "jti": "j-1",
        "iat": iat,
        "nbf": iat,
        "exp": iat + 600,
        "action": "rollback",
        "plan": PLAN,
        "amr": ["pwd", "mfa"],
    }
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not None}


def test_a_valid_token_gives_its_claims():
    got = verify(token(jti="abc", run_id=RUN))
    assert got.jti == "abc"
    assert got.subject == "alice@example.com"
    assert got.action == "rollback"
    assert got.plan_id == PLAN
    assert got.run_id == RUN
    assert got.mfa is True
    assert got.issued_at == NOW
    assert got.expires_at == NOW + timedelta(minutes=10)
    assert got.to_json()["expires_at"] == "2026-11-27T12:10:00+00:00"


def test_every_operation_maps_to_one_of_the_five_actions():
    assert set(ACTION_FOR.values()) == set(ACTIONS)
    for operation, action in ACTION_FOR.items():
        assert verify(token(action=action), operation=operation).action == action


def test_a_plan_wide_token_without_run_claim_is_good_for_any_run_and_a_star_for_any_plan():
    assert verify(token(), run_id="another-run").run_id is None
    assert verify(token(plan_id="*"), plan_id="billing-fast").plan_id == "*"


def test_bearer_prefix_and_whitespace_are_ignored():
    assert verify(f"  Bearer {token()}\n").subject == "alice@example.com"


def test_mfa_can_also_be_a_boolean_claim():
    assert verify(raw(claims(amr=None, mfa=True))).mfa is True


@pytest.mark.parametrize("tok", [None, "", "   ", "Bearer "])
def test_no_token_is_missing(tok):
    assert refused(tok).code == "missing"


@pytest.mark.parametrize("settings", [None, ApprovalSettings(), ApprovalSettings(secret="")])
def test_without_a_key_tokens_are_refused_as_not_configured(settings):
    error = refused(token(), settings)
    assert error.code == "not_configured"
    assert "powerx_approval" in error.message


def test_a_public_key_that_is_not_pem_is_not_configured():
    error = refused(token(), ApprovalSettings(public_key="not a key"))
    assert error.code == "not_configured"
    assert "public_key" in error.message


@pytest.mark.parametrize(
    "tok", ["abc", "a.b.c", "x" * 40, base64.urlsafe_b64encode(b"{}").decode() + ".e30.sig"]
)
def test_garbage_is_malformed(tok):
    assert refused(tok).code in {"malformed", "forged"}
    assert refused("not-a-jwt").code == "malformed"


def test_a_signed_payload_that_is_not_an_object_is_malformed():
    signed = jwt.api_jws.PyJWS().encode(b"[1,2]", SECRET, algorithm="HS256")
    assert refused(signed).code == "malformed"


@pytest.mark.parametrize(
    ("missing", "words"),
    [("jti", "jti"), ("sub", "sub"), ("action", "action"), ("plan", "plan"), ("exp", "exp")],
)
def test_a_token_without_a_required_claim_is_malformed_and_names_it(missing, words):
    error = refused(raw(claims(**{missing: None})))
    assert error.code == "malformed"
    assert f"'{words}'" in error.message


def test_a_token_signed_with_another_secret_is_forged():
    error = refused(
        issue_approval(
            "another-secret-of-sufficient-length-000",
            subject="a",
            action="rollback",
            plan_id=PLAN,
            now=NOW,
        )
    )
    assert error.code == "forged"
    assert "shared secret" in error.message


def test_a_tampered_payload_is_forged():
    head, _, sig = token().split(".")
    body = base64.urlsafe_b64encode(json.dumps(claims(plan="*")).encode()).rstrip(b"=").decode()
    assert refused(f"{head}.{body}.{sig}").code == "forged"


def test_alg_none_is_refused():
    unsigned = jwt.encode(claims(), None, algorithm="none")
    error = refused(unsigned)
    assert error.code == "forged"
    assert "'alg'" in error.message and "HS256" in error.message


def _pem_pair(private):
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem.decode()


@pytest.mark.parametrize(
    ("make", "algorithm"),
    [
        (ed25519.Ed25519PrivateKey.generate, "EdDSA"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
)
def test_public_key_tokens_verify_with_the_keys_own_algorithm_only(make, algorithm):
    private_pem, public_pem = _pem_pair(make())
    key, picked = signing_key(private_pem)
    assert picked == algorithm
    settings = ApprovalSettings(public_key=public_pem)
    tok = issue_approval(
        key, algorithm=algorithm, subject="bob", action="rollback", plan_id=PLAN, now=NOW
    )
    assert verify(tok, settings).subject == "bob"
    # the same token is refused where only a shared secret is configured
    assert refused(tok).code == "forged"
    # another key pair of the same kind: forged
    _, other_public = _pem_pair(make())
    error = refused(tok, ApprovalSettings(public_key=other_public))
    assert error.code == "forged"
    assert "public key" in error.message


def test_algorithm_confusion_hmac_keyed_with_the_public_key_is_refused():
    _, public_pem = _pem_pair(ed25519.Ed25519PrivateKey.generate())
    # an attacker signs HS256 with the (public) PEM text as the HMAC secret
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    import hashlib
    import hmac

    signature = hmac.new(public_pem.encode(), header + b"." + body, hashlib.sha256).digest()
    forged = b".".join([header, body, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()
    error = refused(forged, ApprovalSettings(public_key=public_pem))
    assert error.code == "forged"
    assert "EdDSA" in error.message


def test_both_keys_configured_each_algorithm_uses_its_own_key():
    private_pem, public_pem = _pem_pair(ed25519.Ed25519PrivateKey.generate())
    settings = ApprovalSettings(secret=SECRET, public_key=public_pem)
    key, algorithm = signing_key(private_pem)
    assert verify(token(), settings).subject == "alice@example.com"
    signed = issue_approval(
        key, algorithm=algorithm, subject="bob", action="rollback", plan_id=PLAN, now=NOW
    )
    assert verify(signed, settings).subject == "bob"


def test_an_expired_token_names_exp_and_now():
    tok = token(now=NOW - timedelta(minutes=20))
    error = refused(tok)
    assert error.code == "expired"
    assert "'exp'" in error.message and "2026-11-27T11:50:00+00:00" in error.message


def test_expiry_within_the_leeway_is_tolerated():
    tok = token(now=NOW - timedelta(minutes=10, seconds=20))
    assert verify(tok).subject
    assert refused(tok, now=NOW + timedelta(seconds=11)).code == "expired"


def test_a_token_not_valid_before_later_is_refused():
    error = refused(raw(claims(nbf=int(NOW.timestamp()) + 300)))
    assert error.code == "not_yet_valid"
    assert "'nbf'" in error.message
    assert refused(raw(claims(iat=int(NOW.timestamp()) + 300, nbf=None))).code == "not_yet_valid"


@pytest.mark.parametrize("aud", [None, "other-app", ["other-app", "x"]])
def test_a_token_for_another_audience_is_refused(aud):
    error = refused(raw(claims(aud=aud)))
    assert error.code == "wrong_audience"
    assert "'aud'" in error.message and "'powerx-grey-upgrade'" in error.message


def test_an_audience_list_containing_ours_is_accepted():
    assert verify(raw(claims(aud=["approvals", "powerx-grey-upgrade"]))).jti == "j-1"


def test_the_issuer_is_checked_when_configured():
    settings = ApprovalSettings(secret=SECRET, issuer="https://approvals.example.com")
    assert refused(token(), settings).code == "wrong_issuer"
    error = refused(token(issuer="https://evil.example.com"), settings)
    assert "'iss'" in error.message and "https://approvals.example.com" in error.message
    assert verify(token(issuer="https://approvals.example.com"), settings).issuer


def test_a_token_for_another_action_is_refused_and_names_both():
    error = refused(token(action="takeover"))
    assert error.code == "wrong_action"
    assert "'takeover'" in error.message and "'rollback'" in error.message
    assert refused(raw(claims(action="launch-missiles"))).code == "wrong_action"


def test_a_token_for_another_plan_is_refused():
    error = refused(token(plan_id="billing-fast"))
    assert error.code == "wrong_plan"
    assert "'billing-fast'" in error.message and f"'{PLAN}'" in error.message


def test_a_token_for_another_run_is_refused():
    error = refused(token(run_id="other-run"))
    assert error.code == "wrong_run"
    assert "'other-run'" in error.message and RUN in error.message
    assert refused(token(run_id=RUN), run_id=None).code == "wrong_run"


def test_missing_mfa_is_refused_when_the_policy_wants_it():
    tok = token(mfa=False)
    error = refused(tok)
    assert error.code == "mfa_required"
    assert "'amr'" in error.message
    assert verify(tok, require_mfa=False).mfa is False
    assert refused(raw(claims(amr="mfa"))).code == "mfa_required"  # amr must be a list


def test_a_token_living_longer_than_the_policy_allows_is_refused():
    error = refused(token(ttl=timedelta(hours=2)))
    assert error.code == "too_long_lived"
    assert "7200" in error.message and "3600" in error.message
    # without iat, exp - now counts
    assert refused(raw(claims(iat=None, nbf=None, exp=int(NOW.timestamp()) + 7200))).code == (
        "too_long_lived"
    )
    assert verify(token(ttl=timedelta(hours=2)), max_lifetime=timedelta(hours=3)).jti


def test_an_unknown_operation_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown operation 'launch'"):
        verify(token(), operation="launch")


def test_naive_now_is_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(token(), now=datetime(2026, 1, 1))


def test_issue_validates_its_arguments():
    with pytest.raises(ValueError, match="action 'deploy'"):
        token(action="deploy")
    with pytest.raises(ValueError, match="subject"):
        token(subject=" ")
    with pytest.raises(ValueError, match="ttl"):
        token(ttl=timedelta(0))


def test_signing_key_rejects_other_keys():
    with pytest.raises(ValueError, match="PEM private key"):
        signing_key(b"nope")
    private_pem, _ = _pem_pair(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError, match="P-256"):
        signing_key(private_pem)


def test_peek_unverified_reads_only_subject_and_id():
    assert peek_unverified(token(jti="j-9")) == {"sub": "alice@example.com", "jti": "j-9"}
    assert peek_unverified("garbage") == {}
    assert peek_unverified(None) == {}


def test_settings_repr_hides_the_secret():
    assert SECRET not in repr(SETTINGS)
