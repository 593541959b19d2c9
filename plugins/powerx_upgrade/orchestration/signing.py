"""The trusted artifact signing keys of a task: the keys directory plus the `powerx_signing`
connection's extra `public_keys: {key_id: PEM}` (so keys can live in a secrets backend)."""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from powerx_upgrade.config import signing_keys_dir
from powerx_upgrade.security.artifacts import (
    SigningKeyError,
    load_public_keys,
    merge_keys,
    public_keys_from_mapping,
)

SIGNING_CONN_ID = "powerx_signing"


def connection_public_keys(conn_id: str = SIGNING_CONN_ID) -> dict[str, Any]:
    """The connection's `public_keys` extra ({} when there is no such connection)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return {}
    extra = conn.extra_dejson or {}
    found = extra.get("public_keys") or {}
    if isinstance(found, str):
        try:
            found = json.loads(found)
        except ValueError:
            raise SigningKeyError(
                f"connection {conn_id}: extra public_keys is not a JSON object"
            ) from None
    return found


def signing_keys(conn_id: str = SIGNING_CONN_ID) -> dict[str, Ed25519PublicKey]:
    """Every trusted key, by id; raises SigningKeyError naming a bad file or connection key."""
    sources: list[tuple[str, dict[str, Ed25519PublicKey]]] = []
    directory, explicit = signing_keys_dir()
    if directory is not None and (explicit or directory.is_dir()):
        sources.append((str(directory), load_public_keys(directory)))
    source = f"connection {conn_id}"
    sources.append((source, public_keys_from_mapping(connection_public_keys(conn_id), source)))
    return merge_keys(*sources)
