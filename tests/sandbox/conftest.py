"""Fixtures for the sandbox tests: scenario files, sandboxes in subprocesses, HTTP clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "include" / "config" / "scenarios"

# A small fleet with slow-enough operations to catch them in flight, and no scenario faults:
# tests inject what they need at runtime, so one server serves them all (reset between tests).
FLEET_YAML = """\
name: test-fleet
seed: 99
plugin: crm-sync
tenants:
  count: 20
  version: 2.3.1
  labels: {tier: {gold: 0.2, silver: 0.3, bronze: 0.5}}
  extra:
    - {id: t-internal-1, labels: {tier: gold, internal: "true"}}
latency: {upgrade_ms: 300, rollback_ms: 200, jitter: 0}
traffic: {rps: 200, error_rate: 0.01, latency_p95_ms: 120}
versions:
  2.4.0: {error_rate: 0.012, latency_p95_ms: 125, resources: {memory_mb: 320, workers: 1}}
  2.5.0: {error_rate: 0.012, latency_p95_ms: 130, resources: {memory_mb: 384, workers: 2}}
"""


@pytest.fixture(scope="session")
def fleet_scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scenarios") / "test-fleet.yaml"
    path.write_text(FLEET_YAML)
    return path


@pytest.fixture(scope="session")
def fleet_url(fleet_scenario: Path) -> Iterator[str]:
    with running_sandbox(fleet_scenario) as url:
        yield url


@pytest.fixture
def fleet(fleet_url: str) -> Iterator[httpx.Client]:
    """A client of the shared test-fleet sandbox, reset to the scenario before each test."""
    with httpx.Client(base_url=fleet_url, timeout=10.0) as client:
        client.post("/sandbox/reset").raise_for_status()
        yield client


@pytest.fixture(scope="session")
def bad_version_url() -> Iterator[str]:
    with running_sandbox(SCENARIOS / "bad-version.yaml") as url:
        yield url


@pytest.fixture
def bad_version(bad_version_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bad_version_url, timeout=10.0) as client:
        client.post("/sandbox/reset").raise_for_status()
        yield client
