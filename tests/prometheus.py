"""A sandbox scraped by a real Prometheus server, for tests that read metrics through PromQL.

Fixtures (tests/conftest.py): `prometheus_binary` (session: the server, installed if missing)
and `bad_version_scraped` (module: the bad-version scenario's sandbox and a Prometheus scraping
it every second). For another scenario, in a module fixture:

    with scraped_sandbox(SCENARIOS / "happy.yaml") as scraped:
        ...  # scraped.sandbox, scraped.prometheus: base URLs
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from powerx_dev.prometheus_server import running_prometheus, wait_for_scrape
from powerx_dev.sandbox.testing import running_sandbox


@dataclass(frozen=True)
class ScrapedSandbox:
    """Base URLs of a sandbox and of the Prometheus server that scrapes its `/metrics`."""

    sandbox: str
    prometheus: str

    def query(self, promql: str, at: float) -> list[dict]:
        """An instant PromQL query evaluated at `at` (epoch seconds), once Prometheus has
        scraped past that moment: the `result` list of `{"metric": labels, "value": [t, v]}`."""
        wait_for_scrape(self.prometheus, at)
        answer = httpx.get(
            f"{self.prometheus}/api/v1/query", params={"query": promql, "time": at}, timeout=10
        )
        answer.raise_for_status()
        return answer.json()["data"]["result"]

    def by_tenant(self, promql: str, at: float) -> dict[str, float]:
        """{tenant: value} of a query whose result is labelled by tenant."""
        return {
            item["metric"]["tenant"]: float(item["value"][1]) for item in self.query(promql, at)
        }


@contextmanager
def scraped_sandbox(
    scenario: str | Path, *, scrape_interval: str = "1s"
) -> Iterator[ScrapedSandbox]:
    """Start a sandbox for the scenario and a Prometheus scraping it; both stop at the end."""
    with (
        running_sandbox(scenario) as sandbox,
        running_prometheus([sandbox], scrape_interval=scrape_interval) as prometheus,
    ):
        yield ScrapedSandbox(sandbox, prometheus)
