"""Approval refusals: the closed set of refusal codes, and how PyJWT's errors map onto them.
Messages name the claim, its value and the value expected; never the token."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jwt

REFUSAL_CODES = (
    "missing",
    "malformed",
    "forged",
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "wrong_action",
    "wrong_plan",
    "wrong_run",
    "mfa_required",
    "too_long_lived",
    "replayed",
    "not_configured",
)


class ApprovalRefused(Exception):
    """An approval token was refused; `code` is one of `REFUSAL_CODES`.

    :param code: the closed reason code (`expired`, `wrong_plan`, ...).
    :param message: what is wrong: the claim, its value and the value expected.
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in REFUSAL_CODES:
            raise ValueError(f"unknown refusal code {code!r}; expected one of {REFUSAL_CODES}")
        self.code = code
        self.message = message
        super().__init__(f"approval token refused ({code}): {message}")

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def refusal_for(
    exc: jwt.PyJWTError,
    token: str,
    *,
    key: str,
    audience: str,
    issuer: str | None,
    now: datetime,
    leeway_seconds: int,
    meanings: Mapping[str, str],
) -> ApprovalRefused:
    """Our refusal for PyJWT's error; `key` names the key tried, `meanings` what each required
    claim holds."""
    if isinstance(exc, jwt.InvalidSignatureError):
        return ApprovalRefused("forged", f"the signature does not verify with {key}")
    if isinstance(exc, jwt.DecodeError):
        return ApprovalRefused("malformed", f"the approval token's claims cannot be read: {exc}")
    if not isinstance(exc, jwt.InvalidTokenError):
        name = type(exc).__name__
        return ApprovalRefused("forged", f"the token does not verify with {key}: {name}")
    # PyJWT checks claims only after the signature verified: the payload is the signer's
    payload = jwt.decode(token, options={"verify_signature": False})
    at_now = f"now ({now.isoformat()}, leeway {leeway_seconds:g} s)"
    if isinstance(exc, jwt.ExpiredSignatureError):
        shown = _shown_time(payload, "exp")
        return ApprovalRefused("expired", f"claim 'exp' is {shown}; expected a time after {at_now}")
    if isinstance(exc, jwt.ImmatureSignatureError):
        early = [
            f"claim {c!r} is {_shown_time(payload, c)}" for c in ("nbf", "iat") if c in payload
        ]
        return ApprovalRefused(
            "not_yet_valid", f"{' and '.join(early)}; expected a time before {at_now}"
        )
    return _claim_refusal(exc, payload, audience, issuer, meanings)


def _claim_refusal(
    exc: jwt.InvalidTokenError,
    payload: Mapping[str, Any],
    audience: str,
    issuer: str | None,
    meanings: Mapping[str, str],
) -> ApprovalRefused:
    missing = exc.claim if isinstance(exc, jwt.MissingRequiredClaimError) else None
    if isinstance(exc, jwt.InvalidAudienceError) or missing == "aud":
        aud = payload.get("aud")
        shown = "missing" if aud is None else repr(aud)[:200]
        return ApprovalRefused("wrong_audience", f"claim 'aud' is {shown}; expected {audience!r}")
    if isinstance(exc, jwt.InvalidIssuerError) or missing == "iss":
        shown = repr(payload.get("iss"))[:200]
        return ApprovalRefused("wrong_issuer", f"claim 'iss' is {shown}; expected {issuer!r}")
    if missing is not None:
        meaning = meanings.get(missing, "a value")
        return ApprovalRefused(
            "malformed", f"claim {missing!r} is missing or empty; expected {meaning}"
        )
    return ApprovalRefused("malformed", f"the approval token's claims are invalid: {exc}")


def _shown_time(payload: Mapping[str, Any], claim: str) -> str:
    moment = numeric_date(payload, claim, required=False)
    return moment.isoformat() if moment else repr(payload.get(claim))[:40]


def numeric_date(payload: Mapping[str, Any], claim: str, *, required: bool) -> datetime | None:
    """A NumericDate claim as an aware datetime; `malformed` when it is not a number."""
    value = payload.get(claim)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApprovalRefused(
            "malformed",
            f"claim {claim!r} is {'missing' if value is None else 'not a number'};"
            " expected seconds since the epoch (NumericDate)",
        )
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise ApprovalRefused("malformed", f"claim {claim!r} is out of range") from None
