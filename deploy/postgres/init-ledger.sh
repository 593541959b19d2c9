#!/usr/bin/env bash
# Creates the ledger's own database and user beside Airflow's metadata database. The postgres
# image runs this once, when its data volume is first initialised (docker-entrypoint-initdb.d);
# on an existing volume create them by hand with the same statements.
#
# POWERX_LEDGER_DB, POWERX_LEDGER_USER, POWERX_LEDGER_PASSWORD come from docker-compose.yaml.
# The user owns its database: it creates the ledger tables on first use (docs/ledger.md).
set -euo pipefail

: "${POWERX_LEDGER_DB:?}" "${POWERX_LEDGER_USER:?}" "${POWERX_LEDGER_PASSWORD:?}"

psql -v ON_ERROR_STOP=1 \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v ledger_db="$POWERX_LEDGER_DB" \
    -v ledger_user="$POWERX_LEDGER_USER" \
    -v ledger_password="$POWERX_LEDGER_PASSWORD" <<'SQL'
CREATE USER :"ledger_user" WITH PASSWORD :'ledger_password';
CREATE DATABASE :"ledger_db" OWNER :"ledger_user";
REVOKE ALL ON DATABASE :"ledger_db" FROM PUBLIC;
SQL
