"""Approval tokens: JWTs from an external approval system, each allowing one critical action
(rollback, takeover, approve, resume, adjust) on one plan, optionally one run. PyJWT checks the
signature and the registered claims (`exp`, `nbf`, `iat`, `aud`, `iss`, the required ones); this
module the scope (action, plan, run), MFA and lifetime, and maps PyJWT's errors to our refusal
codes. No Airflow, no HTTP: the settings come in as a value.

A refusal is an `ApprovalRefused` with a closed `code` and a message that names the claim and
the value expected; no message ever contains the token.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from jwt.types import Options

from powerx_upgrade.security.refusals import REFUSAL_CODES as REFUSAL_CODES
from powerx_upgrade.security.refusals import ApprovalRefused as ApprovalRefused
from powerx_upgrade.security.refusals import numeric_date, refusal_for

ACTIONS = ("rollback", "takeover", "approve", "resume", "adjust")
"""The values of a token's `action` claim: what an approver allows."""

ACTION_FOR: Mapping[str, str] = {
    "rollback": "rollback",
    "takeover": "takeover",
    "release": "takeover",
    "pause": "takeover",
    "approve": "approve",
    "reject": "approve",
    "resume": "resume",
    "stop": "resume",
    "adjust": "adjust",
}
"""The action a token must allow for each API/CLI operation."""

DEFAULT_AUDIENCE = "powerx-grey-upgrade"
ANY_PLAN = "*"
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
PUBLIC_KEY_ALGORITHMS = ("EdDSA", "RS256", "ES256")
_BEARER = re.compile(r"^bearer(\s+|$)", re.IGNORECASE)
_MAX_ID = 250  # the ledger's column width for jti and subject
_MEANING = {
    "jti": "a unique token id",
    "sub": "the approver's identity",
    "action": f"one of {', '.join(ACTIONS)}",
    "plan": f"a plan id or {ANY_PLAN!r}",
    "exp": "seconds since the epoch (NumericDate)",
}
"""The claims every token carries (PyJWT's `require`), and what each holds."""
# PyJWT compares `exp` with its own clock, and `nbf`/`iat` in the opposite direction, with one
# leeway per decode: so the signature, the required claims, `exp`, `aud`, `iss`, `sub` and `jti`
# are checked by one decode, `nbf` and `iat` by a second (see _verified_payload).
_EXPIRY_CHECKS: Options = {
    "verify_signature": True,
    "require": list(_MEANING),
    "verify_exp": True,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": True,
    "verify_iss": False,
    "verify_sub": True,
    "verify_jti": True,
}
_NOT_BEFORE_CHECKS: Options = {
    "verify_signature": True,
    "require": [],
    "verify_exp": False,
    "verify_nbf": True,
    "verify_iat": True,
    "verify_aud": False,
    "verify_iss": True,
    "verify_sub": False,
    "verify_jti": False,
}


@dataclass(frozen=True)
class ApprovalSettings:
    """How tokens are verified (from the Airflow connection `powerx_approval`).

    :param secret: shared secret for HS256/HS384/HS512 (the connection's password).
    :param public_key: PEM public key for EdDSA, RS256 or ES256 (extra `public_key`).
    :param audience: the `aud` a token must carry.
    :param issuer: the `iss` a token must carry; not checked when None.
    :param leeway_seconds: clock skew tolerated on `exp`, `nbf` and `iat`.
    :param problem: why the configuration cannot be used (a broken connection); every token
        is then refused as `not_configured` with this message.
    """

    secret: str | None = field(default=None, repr=False)
    public_key: str | None = None
    audience: str = DEFAULT_AUDIENCE
    issuer: str | None = None
    leeway_seconds: int = 30
    problem: str | None = None

    @property
    def configured(self) -> bool:
        return self.problem is None and (bool(self.secret) or bool(self.public_key))


@dataclass(frozen=True)
class ApprovalClaims:
    """What a verified token says: who approved which action on which plan (and run)."""

    jti: str
    subject: str
    action: str
    plan_id: str
    run_id: str | None
    mfa: bool
    issued_at: datetime | None
    expires_at: datetime
    issuer: str | None

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        for name in ("issued_at", "expires_at"):
            if values[name] is not None:
                values[name] = values[name].isoformat()
        return values


def action_for(operation: str) -> str:
    """The action a token must allow for `operation` (`ACTION_FOR`); ValueError if unknown."""
    try:
        return ACTION_FOR[operation]
    except KeyError:
        raise ValueError(
            f"unknown operation {operation!r}; expected one of {', '.join(sorted(ACTION_FOR))}"
        ) from None


def verify_approval(
    token: str | None,
    settings: ApprovalSettings | None,
    *,
    operation: str,
    plan_id: str,
    run_id: str | None = None,
    require_mfa: bool = True,
    max_lifetime: timedelta | None = timedelta(hours=1),
    now: datetime | None = None,
) -> ApprovalClaims:
    """Verify an approval token for one operation on a plan (and run); raise `ApprovalRefused`.

    :param token: the compact JWT (a leading `Bearer ` is ignored); None or blank: `missing`.
    :param settings: the verification keys and expected audience/issuer; None: `not_configured`.
    :param operation: an `ACTION_FOR` key; the token's `action` must be its action.
    :param plan_id: the plan acted on; the token's `plan` must be it or `*`.
    :param run_id: the run acted on, if any; a token with a `run` claim is good for that run only.
    :param require_mfa: the policy wants `amr` to contain `mfa` (or `mfa: true`).
    :param max_lifetime: the longest a token may live (`exp - iat`, and `exp - now`).
    :param now: the time to check against (aware); default the current time.
    """
    action = action_for(operation)
    now = _aware_now(now)
    token = _strip(token)
    if settings is not None and settings.problem is not None:
        raise ApprovalRefused("not_configured", settings.problem)
    if settings is None or not settings.configured:
        raise ApprovalRefused(
            "not_configured",
            "no approval verification key: set the password (shared secret) or extra"
            " 'public_key' of the Airflow connection 'powerx_approval'",
        )
    payload = _verified_payload(token, settings, now)
    claims = _claims(payload)
    leeway = timedelta(seconds=settings.leeway_seconds)
    _check_scope(claims, action=action, operation=operation, plan_id=plan_id, run_id=run_id)
    if require_mfa and not claims.mfa:
        raise ApprovalRefused(
            "mfa_required",
            f"claim 'amr' does not contain 'mfa' (nor is claim 'mfa' true); the policy requires"
            f" multi-factor authentication for action {action!r}",
        )
    if max_lifetime is not None:
        _check_lifetime(claims, now, leeway, max_lifetime)
    return claims


def issue_approval(
    key: str | bytes | Any,
    *,
    algorithm: str = "HS256",
    subject: str,
    action: str,
    plan_id: str,
    run_id: str | None = None,
    audience: str = DEFAULT_AUDIENCE,
    issuer: str | None = None,
    ttl: timedelta = timedelta(minutes=10),
    mfa: bool = True,
    jti: str | None = None,
    now: datetime | None = None,
) -> str:
    """A signed approval token (for development and tests; production tokens come from the
    approval system). `key`: the shared secret for HS*, a PEM private key or key object else."""
    if action not in ACTIONS:
        raise ValueError(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    for name, value in (("subject", subject), ("plan_id", plan_id)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if ttl <= timedelta(0):
        raise ValueError(f"ttl must be positive, got {ttl}")
    if algorithm not in HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS:
        raise ValueError(
            f"algorithm {algorithm!r} is not one of"
            f" {', '.join(HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS)}"
        )
    issued = int(_aware_now(now).timestamp())
    payload: dict[str, Any] = {
        "aud": audience,
        "sub": subject,
        "jti": jti or uuid.uuid4().hex,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl.total_seconds()),
        "action": action,
        "plan": plan_id,
        "amr": ["pwd", "mfa"] if mfa else ["pwd"],
    }
    if issuer is not None:
        payload["iss"] = issuer
    if run_id is not None:
        payload["run"] = run_id
    return jwt.encode(payload, key, algorithm=algorithm)


def signing_key(private_key_pem: bytes) -> tuple[Any, str]:
    """Load a PEM private key and pick its algorithm: Ed25519 -> EdDSA, RSA -> RS256,
    EC P-256 -> ES256. ValueError naming the key type otherwise."""
    try:
        key = load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key: {exc}") from None
    return key, _algorithm_of(key)


def peek_unverified(token: str | None) -> dict[str, str]:
    """The `sub` and `jti` of a token without verifying it (for the audit of a refusal),
    as far as they can be read; never raises, never returns anything else of the token."""
    try:
        payload = jwt.decode(_strip(token), options={"verify_signature": False})
    except Exception:
        return {}
    return {
        name: value[:_MAX_ID]
        for name, value in ((key, payload.get(key)) for key in ("sub", "jti"))
        if isinstance(value, str) and value
    }


# -- checks -----------------------------------------------------------------------------------


def _aware_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    return now.astimezone(UTC)


def _strip(token: str | None) -> str:
    text = _BEARER.sub("", (token or "").strip()).strip()
    if not text:
        raise ApprovalRefused("missing", "no approval token was given")
    return text


def _verification_keys(settings: ApprovalSettings) -> dict[str, Any]:
    # Each algorithm gets its own key, so a token cannot choose how it is checked: HS* only
    # ever uses the shared secret, and only the public key's own algorithm uses the public key
    # (no "alg: none", no HMAC keyed with the public key's PEM).
    keys: dict[str, Any] = {}
    if settings.secret:
        keys.update(dict.fromkeys(HMAC_ALGORITHMS, settings.secret))
    if settings.public_key:
        try:
            public = load_pem_public_key(settings.public_key.encode())
            keys[_algorithm_of(public)] = public
        except (ValueError, TypeError) as exc:
            raise ApprovalRefused(
                "not_configured",
                f"extra 'public_key' of the approval connection is not a usable PEM public key"
                f" ({exc})",
            ) from None
    return keys


def _algorithm_of(key: Any) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if key.curve.name != "secp256r1":
            raise ValueError(f"EC key on curve {key.curve.name}; ES256 needs P-256 (secp256r1)")
        return "ES256"
    raise ValueError(f"{type(key).__name__} keys are not supported; use Ed25519, RSA or EC P-256")


def _verified_payload(token: str, settings: ApprovalSettings, now: datetime) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise ApprovalRefused(
            "malformed", "the approval token is not a JWT (header.payload.signature)"
        ) from None
    keys = _verification_keys(settings)
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in keys:
        raise ApprovalRefused(
            "forged",
            f"header 'alg' is {str(algorithm)[:20]!r}; expected one of {', '.join(keys)}"
            " (the algorithms of the configured keys)",
        )
    kind = "shared secret" if algorithm in HMAC_ALGORITHMS else "public key"
    # PyJWT checks times against its clock; the caller checks against `now` (the same moment in
    # production, a fixed one in tests and replays): the difference goes into the leeway, which
    # PyJWT subtracts for `exp` and adds for `nbf` and `iat`.
    skew = (datetime.now(UTC) - now).total_seconds()
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            keys[algorithm],
            algorithms=[algorithm],
            options=_EXPIRY_CHECKS,
            audience=settings.audience,
            leeway=settings.leeway_seconds + skew,
        )
        # the issuer second: a token for another audience is refused as such first, whatever
        # its issuer (PyJWT itself checks `iss` before `aud`)
        jwt.decode(
            token,
            keys[algorithm],
            algorithms=[algorithm],
            options=_NOT_BEFORE_CHECKS,
            issuer=settings.issuer,
            leeway=settings.leeway_seconds - skew,
        )
    except jwt.PyJWTError as exc:
        raise refusal_for(
            exc,
            token,
            key=f"the configured {kind} ({algorithm})",
            audience=settings.audience,
            issuer=settings.issuer,
            now=now,
            leeway_seconds=settings.leeway_seconds,
            meanings=_MEANING,
        ) from None
    return payload


def _required_text(payload: Mapping[str, Any], claim: str, meaning: str) -> str:
    value = payload.get(claim)
    if not isinstance(value, str) or not value.strip():
        raise ApprovalRefused(
            "malformed", f"claim {claim!r} is missing or empty; expected {meaning}"
        )
    if len(value) > _MAX_ID:
        raise ApprovalRefused("malformed", f"claim {claim!r} is longer than {_MAX_ID} characters")
    return value


def _expiry(payload: Mapping[str, Any]) -> datetime:
    expires = numeric_date(payload, "exp", required=True)
    if expires is None:  # pragma: no cover - required=True refuses a missing exp
        raise ApprovalRefused("malformed", f"claim 'exp' is missing; expected {_MEANING['exp']}")
    return expires


def _mfa(payload: Mapping[str, Any]) -> bool:
    amr = payload.get("amr")
    return payload.get("mfa") is True or (isinstance(amr, list) and "mfa" in amr)


def _claims(payload: Mapping[str, Any]) -> ApprovalClaims:
    run = payload.get("run")
    if run is not None and (not isinstance(run, str) or not run.strip()):
        raise ApprovalRefused("malformed", "claim 'run' must be a run id (a non-empty string)")
    issuer = payload.get("iss")
    return ApprovalClaims(
        jti=_required_text(payload, "jti", _MEANING["jti"]),
        subject=_required_text(payload, "sub", _MEANING["sub"]),
        action=_required_text(payload, "action", _MEANING["action"]),
        plan_id=_required_text(payload, "plan", _MEANING["plan"]),
        run_id=run,
        mfa=_mfa(payload),
        issued_at=numeric_date(payload, "iat", required=False),
        expires_at=_expiry(payload),
        issuer=issuer if isinstance(issuer, str) else None,
    )


def _check_scope(
    claims: ApprovalClaims, *, action: str, operation: str, plan_id: str, run_id: str | None
) -> None:
    if claims.action != action:
        raise ApprovalRefused(
            "wrong_action",
            f"claim 'action' is {claims.action!r}; expected {action!r}"
            f" (operation {operation!r} needs it)",
        )
    if claims.plan_id not in (plan_id, ANY_PLAN):
        raise ApprovalRefused(
            "wrong_plan",
            f"claim 'plan' is {claims.plan_id!r}; expected {plan_id!r} or {ANY_PLAN!r}",
        )
    if claims.run_id is not None and claims.run_id != run_id:
        expected = repr(run_id) if run_id else "no run claim (this operation names no run)"
        raise ApprovalRefused("wrong_run", f"claim 'run' is {claims.run_id!r}; expected {expected}")


def _check_lifetime(
    claims: ApprovalClaims, now: datetime, leeway: timedelta, max_lifetime: timedelta
) -> None:
    limit = f"at most {max_lifetime.total_seconds():g} s (policy control.token_max_lifetime)"
    if claims.issued_at is not None and claims.expires_at - claims.issued_at > max_lifetime:
        lived = (claims.expires_at - claims.issued_at).total_seconds()
        raise ApprovalRefused(
            "too_long_lived",
            f"claims 'exp' - 'iat' give a lifetime of {lived:g} s; expected {limit}",
        )
    if claims.expires_at - now > max_lifetime + leeway:
        left = (claims.expires_at - now).total_seconds()
        raise ApprovalRefused("too_long_lived", f"claim 'exp' is {left:g} s away; expected {limit}")
