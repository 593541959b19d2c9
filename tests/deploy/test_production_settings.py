"""The production settings we ship beside the compose file (deploy/production/) and the
compose file's own Airflow settings: every `AIRFLOW__SECTION__KEY` is a real option of the
pinned Airflow (Airflow ignores unknown ones silently), and the bucket lifecycle rules keep task
logs and reports at least 365 days."""

from __future__ import annotations

import json

import pytest

from tests.deploy import compose_rules as rules

pytestmark = pytest.mark.unit

PRODUCTION = rules.ROOT / "deploy" / "production"
RETENTION_FLOOR_DAYS = 365


@pytest.fixture(scope="module")
def options() -> dict[str, set[str]]:
    return rules.airflow_config_options()


def test_compose_airflow_settings_are_real_airflow_options(options):
    doc = rules.load()
    names = {
        key for service in [doc["x-airflow-common"], *rules.services(doc).values()]
        for key in rules.environment(service)
    }  # fmt: skip
    assert rules.airflow_option_problems(sorted(names), options) == []


def test_production_env_settings_are_real_airflow_options(options):
    names = list(rules.read_env_file(PRODUCTION / "production.env.example"))
    assert any(name.startswith("AIRFLOW__LOGGING__REMOTE") for name in names)
    assert rules.airflow_option_problems(names, options) == []


def test_a_misspelt_airflow_option_is_caught(options):
    problems = rules.airflow_option_problems(
        [
            "AIRFLOW__LOGGING__REMOTE_LOGING",
            "AIRFLOW__LOGGIN__REMOTE_LOGGING",
            "AIRFLOW__CELERY__X",
        ],
        options,
    )
    assert problems == [
        "AIRFLOW__LOGGING__REMOTE_LOGING: Airflow has no option [logging] remote_loging",
        "AIRFLOW__LOGGIN__REMOTE_LOGGING: Airflow has no section [loggin]",
    ]


def test_s3_lifecycle_keeps_task_logs_and_reports_at_least_a_year():
    rules_ = json.loads((PRODUCTION / "s3-lifecycle.json").read_text())["Rules"]
    prefixes = {rule["Filter"]["Prefix"] for rule in rules_}
    assert prefixes == {"task-logs/", "reports/"}
    for rule in rules_:
        assert rule["Status"] == "Enabled"
        assert rule["Expiration"]["Days"] >= RETENTION_FLOOR_DAYS, rule
        assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] >= RETENTION_FLOOR_DAYS


def test_gcs_lifecycle_keeps_task_logs_and_reports_at_least_a_year():
    rules_ = json.loads((PRODUCTION / "gcs-lifecycle.json").read_text())["rule"]
    deletes = [r for r in rules_ if r["action"]["type"] == "Delete"]
    assert deletes, rules_
    for rule in deletes:
        assert rule["condition"]["age"] >= RETENTION_FLOOR_DAYS, rule
        assert set(rule["condition"]["matchesPrefix"]) == {"task-logs/", "reports/"}


def test_production_remote_logs_and_reports_go_to_the_bucket_the_lifecycle_covers():
    env = rules.read_env_file(PRODUCTION / "production.env.example")
    assert env["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "True"
    assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"].endswith("/task-logs")
    assert env["POWERX_UPGRADE_REPORTS"].endswith("/reports")
