"""The UI pages' CSRF token: the Airflow UI's cookie may change something only when the request
also carries a token that only a page rendered for that same cookie knows.

The cookie is HttpOnly and SameSite=lax, and the pages' script cannot read it; the token is an
HMAC of the cookie's JWT, so another site can neither read nor compute it.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

CSRF_HEADER = "X-PowerX-CSRF"
_KEY = b"powerx-grey-upgrade-ui-csrf-v1"


def csrf_token(jwt: str) -> str:
    return hmac.new(_KEY, jwt.encode(), hashlib.sha256).hexdigest()


def ui_request_is_genuine(request: Request, jwt: str | None) -> bool:
    """Whether a cookie-authenticated request carries the CSRF token of its cookie."""
    sent = request.headers.get(CSRF_HEADER)
    return bool(jwt and sent) and hmac.compare_digest(str(sent), csrf_token(str(jwt)))
