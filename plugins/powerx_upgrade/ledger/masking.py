"""Secret masking for audit payloads, so that the outbox never persists a credential."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
_SECRET_KEY = re.compile(
    r"passw(or)?d|passphrase|(^|[-_])pass$|secret|token|api[-_]?key|authori[sz]ation|private[-_]?key"
    r"|access[-_]?key|credential|cookie|^dsn$|connection[-_]?string",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]+:)(?P<secret>[^@\s/]+)@", re.I)


def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a secret (`password`, `api_key`, `x-auth-token`, ...)."""
    return bool(_SECRET_KEY.search(key))


def mask_secrets(value: Any) -> Any:
    """A copy of `value` with secret-named keys' values and URL passwords replaced by `***`."""
    if isinstance(value, Mapping):
        return {
            key: MASK
            if isinstance(key, str) and is_secret_key(key) and value[key] is not None
            else mask_secrets(value[key])
            for key in value
        }
    if isinstance(value, list | tuple):
        return [mask_secrets(item) for item in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", value)
    return value
