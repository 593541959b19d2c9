# The image of every Airflow service in docker-compose.yaml (stage `runtime`): the official
# Airflow image with this package installed from the checkout with its production extras
# (PostgreSQL driver, Celery provider). Stage `sandbox` adds the dev package (packages/powerx-dev: the PowerX platform
# simulator) for the compose file's sandbox service; the Airflow services never have it. The base image's Airflow version is the one pinned in uv.lock
# (tests/deploy/test_compose.py checks it).
FROM apache/airflow:3.3.2-python3.11 AS runtime

# The package's runtime config and templates, and the DAG loader, go into the image too, so the
# image runs as is (Kubernetes, another compose file); docker-compose.yaml bind-mounts the
# checkout's copies over them for editing without a rebuild.
ENV POWERX_UPGRADE_CONFIG=/opt/airflow/include/config \
    POWERX_UPGRADE_TEMPLATES=/opt/airflow/include/templates \
    POWERX_UPGRADE_REPORTS=/opt/airflow/reports

COPY --chown=airflow:0 pyproject.toml README.md /opt/powerx/src/
COPY --chown=airflow:0 plugins/powerx_upgrade /opt/powerx/src/plugins/powerx_upgrade

# Pin Airflow to the image's own version (AIRFLOW_VERSION is set by the base image), so that
# installing the package never upgrades or downgrades Airflow underneath the image. The
# production extras (pyproject: `postgres` = the ledger's driver, `celery` = the
# CeleryExecutor's provider) at the versions uv.lock resolved; tests/deploy/test_compose.py
# checks that these pins and extras agree with the lock and pyproject.toml.
ARG PSYCOPG_VERSION=3.3.9
ARG CELERY_PROVIDER_VERSION=3.26.0
RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        "/opt/powerx/src[postgres,celery]" \
        "psycopg[binary]==${PSYCOPG_VERSION}" \
        "apache-airflow-providers-celery==${CELERY_PROVIDER_VERSION}"

COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 include /opt/airflow/include
RUN mkdir -p /opt/airflow/reports

# The sandbox service: the runtime image plus the dev tools (their dependencies are the
# runtime's, already installed).
FROM runtime AS sandbox
COPY --chown=airflow:0 packages/powerx-dev /opt/powerx/src/packages/powerx-dev
RUN pip install --no-cache-dir --no-deps /opt/powerx/src/packages/powerx-dev
