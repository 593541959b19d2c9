"""docker-compose.yaml, checked without a container engine: the structure `docker compose
config` would refuse, and the wiring between services that only fails at run time (a
connection to the wrong port, a volume mounted where the code does not look, a dashboard
provider pointing at an empty folder). Each rule is also shown to catch a broken copy."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import compose_rules as rules

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def text() -> str:
    return rules.COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return rules.load()


@pytest.fixture(scope="module")
def documented() -> dict[str, str]:
    return rules.read_env_file()


@pytest.fixture(scope="module")
def resolved(doc: dict[str, Any], documented: dict[str, str]) -> dict[str, Any]:
    """The file as compose runs it with .env.example's values."""
    return rules.resolve(doc, documented)


def broken(doc: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    copied = copy.deepcopy(doc)
    change(copied)
    return copied


# -- the real file ---------------------------------------------------------------------------


def test_compose_file_uses_only_known_keys_and_string_environment_values(doc):
    assert rules.schema_problems(doc) == []


def test_every_service_of_the_official_topology_plus_sandbox_and_metrics_exists(doc):
    assert rules.missing_services(doc) == []


def test_every_variable_has_a_default_or_is_documented_in_env_example(doc, documented):
    assert rules.variable_problems(doc, documented) == []


def test_named_volumes_are_declared_and_bind_mounts_exist_in_the_repository(resolved):
    assert rules.volume_problems(resolved) == []


def test_depends_on_targets_exist_with_satisfiable_conditions(resolved):
    assert rules.depends_problems(resolved) == []


def test_long_running_services_have_healthchecks_and_restart_policies(resolved):
    assert rules.healthcheck_problems(resolved) == []


def test_airflow_services_merge_the_common_anchor(text):
    assert rules.anchor_problems(text) == []


def test_airflow_services_share_the_common_image_environment_and_volumes(doc):
    assert rules.airflow_common_problems(doc) == []


def test_metrics_services_only_run_under_the_metrics_profile(doc):
    assert rules.profile_problems(doc) == []


def test_third_party_images_are_pinned(doc):
    assert rules.image_problems(doc) == []


def test_host_ports_are_well_formed_and_unique(resolved):
    assert rules.port_problems(resolved) == []


def test_connections_point_at_the_sandbox_and_the_ledger_database(resolved):
    assert rules.connection_problems(resolved) == []


def test_postgres_init_script_creates_the_ledger_database_and_user(resolved):
    assert rules.init_script_problems(resolved) == []


def test_config_templates_reports_and_scenario_paths_are_mounted_where_the_code_looks(resolved):
    assert rules.path_problems(resolved) == []


def test_statsd_prometheus_and_grafana_are_wired_together(resolved):
    assert rules.metrics_problems(resolved) == []


def test_dockerfile_base_image_is_the_locked_airflow_on_the_project_python():
    python = (rules.ROOT / ".python-version").read_text().strip()
    airflow = rules.locked_version("apache-airflow")
    assert airflow is not None
    dockerfile = rules.DOCKERFILE.read_text(encoding="utf-8")
    assert rules.dockerfile_problems(dockerfile, airflow, python) == []


def test_dockerfile_installs_the_extras_at_the_locked_versions():
    dockerfile = rules.DOCKERFILE.read_text(encoding="utf-8")
    assert rules.dockerfile_lock_problems(dockerfile) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("ARG PSYCOPG_VERSION=3.3.9", "ARG PSYCOPG_VERSION=3.1.0"), "uv.lock has psycopg 3.3.9"),
        (("[postgres,celery]", "[postgres]"), "pyproject has ['celery', 'postgres']"),
        (("==${CELERY_PROVIDER_VERSION}", ">=3.8"), "does not install"),
    ],
)
def test_a_dockerfile_that_drifts_from_the_lock_is_caught(edit, expected):
    dockerfile = rules.DOCKERFILE.read_text(encoding="utf-8")
    bad = dockerfile.replace(*edit)
    assert bad != dockerfile
    problems = rules.dockerfile_lock_problems(bad)
    assert any(expected in p for p in problems), problems


def test_the_init_job_migrates_the_ledger_after_airflow(doc):
    script = "\n".join(doc["services"]["airflow-init"]["command"])
    assert "airflow version" in script and "powerx ledger upgrade" in script
    assert script.index("airflow version") < script.index("powerx ledger upgrade")
    assert "set -euo pipefail" in script  # a failed upgrade fails the init job


def test_the_compose_file_interpolates_with_defaults_alone(doc):
    """With no .env at all (`docker compose up` on a fresh clone) every value is complete."""
    bare = rules.resolve(doc, {})
    env = rules.environment(bare["x-airflow-common"])
    assert env["AIRFLOW_CONN_POWERX_PLATFORM"] == "http://sandbox:8700"
    assert env["POWERX_UPGRADE_REPORTS"] == "/opt/airflow/reports"
    assert bare["services"]["airflow-apiserver"]["ports"] == ["8080:8080"]
    leftovers = {text for _, text in rules.strings(bare) if "${" in text}
    assert all("${HOSTNAME}" in text for text in leftovers), leftovers  # escaped $${HOSTNAME}


# -- the rules catch what they are for ---------------------------------------------------------


def test_interpolation_parser_reads_defaults_nesting_and_escapes():
    refs = list(rules.references("a ${A:-x} $$B ${C} $D ${E:-${F:-y}} ${G?need}"))
    assert [(r.name, r.operator, r.default) for r in refs] == [
        ("A", ":-", "x"),
        ("C", None, None),
        ("D", None, None),
        ("E", ":-", "${F:-y}"),
        ("F", ":-", "y"),
        ("G", "?", "need"),
    ]
    assert rules.interpolate("${A:-x}/$$B/${E:-${F:-y}}", {"F": "z"}) == "x/$B/z"
    assert rules.interpolate("${A:-x}", {"A": ""}) == "x"
    assert rules.interpolate("${A-x}", {"A": ""}) == ""


@pytest.mark.parametrize("value", ["$", "a $ b", "${A", "${A B}", "${1A}"])
def test_invalid_interpolations_are_refused(value):
    with pytest.raises(rules.InterpolationError):
        list(rules.references(value))


def test_an_undocumented_variable_without_default_is_caught(doc, documented):
    bad = broken(
        doc, lambda d: d["services"]["redis"].setdefault("environment", {}).update(X="${NOPE}")
    )
    assert any("NOPE" in p for p in rules.variable_problems(bad, documented))


def test_an_unescaped_shell_variable_in_a_healthcheck_is_caught(doc, documented):
    def change(d):
        d["services"]["airflow-triggerer"]["healthcheck"]["test"][1] = "check $HOSTNAME"

    problems = rules.variable_problems(broken(doc, change), documented)
    assert any("HOSTNAME" in p for p in problems)


def test_stale_or_disagreeing_env_example_entries_are_caught(doc, documented):
    assert any("UNUSED" in p for p in rules.variable_problems(doc, {**documented, "UNUSED": "1"}))
    assert any(
        "AIRFLOW_API_PORT" in p
        for p in rules.variable_problems(doc, {**documented, "AIRFLOW_API_PORT": "9999"})
    )


def test_an_undeclared_volume_and_a_missing_bind_source_are_caught(resolved):
    def change(d):
        d["services"]["sandbox"]["volumes"] += ["scratch:/tmp/x", "./no-such-dir:/opt/x"]

    problems = rules.volume_problems(broken(resolved, change))
    assert any("'scratch' is not declared" in p for p in problems)
    assert any("no-such-dir" in p for p in problems)
    unused = broken(resolved, lambda d: d["volumes"].update(spare=None))
    assert any("'spare'" in p for p in rules.volume_problems(unused))


def test_depends_on_an_unknown_or_profiled_service_or_unhealthy_target_is_caught(resolved):
    def change(d):
        deps = d["services"]["airflow-scheduler"]["depends_on"]
        deps["ghost"] = {"condition": "service_started"}
        deps["grafana"] = {"condition": "service_healthy"}
        deps["airflow-cli"] = {"condition": "service_healthy"}
        deps["redis"] = {"condition": "service_ready"}

    problems = "\n".join(rules.depends_problems(broken(resolved, change)))
    assert "undefined service 'ghost'" in problems
    assert "grafana, which only runs under profiles" in problems
    assert "airflow-cli healthy: it has no healthcheck" in problems
    assert "unknown condition 'service_ready'" in problems


def test_a_depends_on_cycle_is_caught(resolved):
    def change(d):
        d["services"]["redis"]["depends_on"] = {
            "airflow-scheduler": {"condition": "service_started"}
        }

    assert any("cycle" in p for p in rules.depends_problems(broken(resolved, change)))


def test_a_long_running_service_without_healthcheck_is_caught(resolved):
    bad = broken(resolved, lambda d: d["services"]["sandbox"].pop("healthcheck"))
    assert rules.healthcheck_problems(bad) == [
        "service sandbox runs for good but has no healthcheck"
    ]


def test_an_airflow_service_that_copies_instead_of_merging_the_anchor_is_caught(text):
    bad = text.replace(
        "  airflow-triggerer:\n"
        "    # Runs the batch gates while they bake (deferred). Scale it out with\n"
        "    # `docker compose up -d --scale airflow-triggerer=2` (docs/deployment.md).\n"
        "    <<: *airflow-common\n",
        "  airflow-triggerer:\n    image: apache/airflow:3.3.2\n",
    )
    assert bad != text
    assert rules.anchor_problems(bad) == [
        "service airflow-triggerer does not merge <<: *airflow-common"
    ]


def test_an_airflow_service_overriding_common_environment_is_caught(doc):
    def change(d):
        d["services"]["airflow-worker"]["environment"]["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"

    problems = rules.airflow_common_problems(broken(doc, change))
    assert problems == [
        "service airflow-worker: environment AIRFLOW__CORE__EXECUTOR differs from x-airflow-common"
    ]


def test_a_metrics_service_without_its_profile_is_caught(doc):
    bad = broken(doc, lambda d: d["services"]["grafana"].pop("profiles"))
    assert rules.profile_problems(bad) == ["service grafana must carry profiles: [metrics]"]


def test_an_unpinned_image_and_a_duplicate_host_port_are_caught(resolved):
    def change(d):
        d["services"]["redis"]["image"] = "redis:latest"
        d["services"]["grafana"]["ports"] = ["8080:3000"]

    bad = broken(resolved, change)
    assert rules.image_problems(bad) == [
        "service redis: image 'redis:latest' is not pinned to a version"
    ]
    assert any("host port 8080" in p for p in rules.port_problems(bad))


def test_a_connection_to_the_wrong_port_or_database_is_caught(resolved):
    def change(d):
        env = d["x-airflow-common"]["environment"]
        env["AIRFLOW_CONN_POWERX_AUDIT"] = "http://sandbox:8701"
        env["AIRFLOW_CONN_POWERX_LEDGER"] = env["AIRFLOW_CONN_POWERX_LEDGER"].replace(
            "/powerx_ledger", "/airflow"
        )

    problems = "\n".join(rules.connection_problems(broken(resolved, change)))
    assert "AIRFLOW_CONN_POWERX_AUDIT=http://sandbox:8701" in problems
    assert "names another database" in problems


def test_reports_volume_mounted_elsewhere_than_powerx_upgrade_reports_is_caught(resolved):
    def change(d):
        d["x-airflow-common"]["environment"]["POWERX_UPGRADE_REPORTS"] = "/data/reports"
        for name in rules.AIRFLOW_SERVICES:
            d["services"][name]["environment"]["POWERX_UPGRADE_REPORTS"] = "/data/reports"

    problems = rules.path_problems(broken(resolved, change))
    assert len([p for p in problems if "POWERX_UPGRADE_REPORTS" in p]) == len(
        rules.AIRFLOW_SERVICES
    )


def test_a_missing_sandbox_scenario_is_caught(resolved):
    def change(d):
        command = d["services"]["sandbox"]["command"]
        command[command.index("--scenario") + 1] = "/opt/airflow/include/config/scenarios/nope.yaml"

    assert any("nope.yaml" in p for p in rules.path_problems(broken(resolved, change)))


def test_statsd_settings_that_miss_the_exporter_are_caught(resolved):
    def change(d):
        env = d["x-airflow-common"]["environment"]
        env["AIRFLOW__METRICS__STATSD_PORT"] = "8125"
        env["AIRFLOW__METRICS__STATSD_PREFIX"] = "airflow"

    problems = "\n".join(rules.metrics_problems(broken(resolved, change)))
    assert "not the exporter's UDP port 9125" in problems
    assert "does not start with the StatsD prefix 'airflow.'" in problems


def test_a_grafana_dashboard_folder_mounted_elsewhere_is_caught(resolved):
    def change(d):
        volumes = d["services"]["grafana"]["volumes"]
        volumes[:] = [v.replace("/etc/grafana/dashboards/powerx", "/srv/boards") for v in volumes]

    problems = rules.metrics_problems(broken(resolved, change))
    assert any("holds no mounted dashboards" in p for p in problems)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("3.3.2-python3.11", "3.2.0-python3.11"), "expected apache/airflow:3.3.2-python3.11"),
        (("3.3.2-python3.11", "3.3.2-python3.12"), "expected apache/airflow:3.3.2-python3.11"),
        (('"psycopg[binary]==${PSYCOPG_VERSION}"', ""), "psycopg[binary]"),
        (("COPY --chown=airflow:0 dags", "COPY --chown=airflow:0 nodags"), "COPY nodags"),
    ],
)
def test_a_dockerfile_off_the_lock_or_missing_pieces_is_caught(edit, expected):
    dockerfile = rules.DOCKERFILE.read_text(encoding="utf-8")
    bad = dockerfile.replace(*edit)
    assert bad != dockerfile
    problems = rules.dockerfile_problems(bad, rules.locked_version("apache-airflow"), "3.11")
    assert any(expected in p for p in problems), problems


def test_a_copied_path_excluded_by_dockerignore_is_caught(tmp_path: Path):
    for name in ("pyproject.toml", "README.md"):
        (tmp_path / name).write_text("x")
    (tmp_path / "plugins" / "powerx_upgrade").mkdir(parents=True)
    (tmp_path / "packages" / "powerx-dev").mkdir(parents=True)  # the sandbox stage's dev package
    for name in ("dags", "include"):
        (tmp_path / name).mkdir()
    (tmp_path / ".dockerignore").write_text("include\n")
    dockerfile = rules.DOCKERFILE.read_text(encoding="utf-8")
    problems = rules.dockerfile_problems(dockerfile, "3.3.2", "3.11", root=tmp_path)
    assert problems == ["COPY include: excluded by .dockerignore"]


def test_env_example_has_no_secrets_beyond_the_documented_demo_defaults(documented):
    """The committed example must not carry a real key: only the demo placeholders."""
    for name in ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY"):
        assert re.fullmatch(r"powerx-demo-[a-z-]+-change-me", documented[name]), name
    assert documented["AIRFLOW_FERNET_KEY"] == ""
