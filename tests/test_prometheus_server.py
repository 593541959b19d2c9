"""The Prometheus runner's decisions: when to install Debian's package, the scrape config."""

from __future__ import annotations

import socket

import pytest

from powerx_dev.prometheus_server import (
    BINARY_ENV,
    PrometheusStartError,
    PrometheusUnavailable,
    _epoch,
    plan_install,
    running_prometheus,
    scrape_config,
)

pytestmark = pytest.mark.unit

INSTALL = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]


def test_nothing_is_installed_when_prometheus_is_found():
    assert plan_install(found="/usr/bin/prometheus", euid=1000, debian=False, apt_lists=False) == []


def test_root_on_debian_installs_the_package_and_updates_apt_lists_only_when_missing():
    assert plan_install(found=None, euid=0, debian=True, apt_lists=True) == [INSTALL]
    assert plan_install(found=None, euid=0, debian=True, apt_lists=False) == [
        ["apt-get", "update"],
        INSTALL,
    ]


def test_a_user_who_is_not_root_is_told_the_apt_command_to_run():
    with pytest.raises(PrometheusUnavailable, match=r"sudo apt-get install .*prometheus") as caught:
        plan_install(found=None, euid=1000, debian=True, apt_lists=True)
    assert BINARY_ENV in str(caught.value)


def test_a_machine_without_apt_is_told_where_prometheus_comes_from():
    with pytest.raises(PrometheusUnavailable, match=r"prometheus\.io/download") as caught:
        plan_install(found=None, euid=0, debian=False, apt_lists=True)
    assert BINARY_ENV in str(caught.value)


def test_scrape_config_has_one_job_per_target_with_its_path_and_the_interval():
    config = scrape_config(["http://127.0.0.1:8700", "127.0.0.1:9100", "https://h:1/custom"], "2s")
    jobs = config["scrape_configs"]
    assert [job["job_name"] for job in jobs] == ["powerx-0", "powerx-1", "powerx-2"]
    assert [job["static_configs"][0]["targets"] for job in jobs] == [
        ["127.0.0.1:8700"],
        ["127.0.0.1:9100"],
        ["h:1"],
    ]
    assert [job["metrics_path"] for job in jobs] == ["/metrics", "/metrics", "/custom"]
    assert [job["scheme"] for job in jobs] == ["http", "http", "https"]
    assert {job["scrape_interval"] for job in jobs} == {"2s"}
    assert config["global"]["scrape_interval"] == "2s"


def test_a_target_without_host_is_refused():
    with pytest.raises(ValueError, match="no host:port"):
        scrape_config(["http:///metrics"])


def test_prometheus_nanosecond_timestamps_are_read():
    assert _epoch("2026-01-01T00:00:01.123456789Z") == pytest.approx(1_767_225_601.123456)
    assert _epoch("2026-01-01T00:00:01Z") == 1_767_225_601.0


@pytest.mark.e2e
def test_a_server_that_cannot_start_raises_with_its_log_and_is_not_left_running(
    prometheus_binary,
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(PrometheusStartError, match="address already in use") as caught,
            running_prometheus(["127.0.0.1:1"], port=port, startup_timeout=20),
        ):
            pass
    assert "exited with code" in str(caught.value)
