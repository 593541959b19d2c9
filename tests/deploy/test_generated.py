"""The metrics profile's generated files (statsd_exporter mapping, Grafana dashboards) match
the monitoring JSON they come from, so the dashboards Grafana loads are the shipped ones."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.deploy.compose_rules import ROOT

pytestmark = pytest.mark.unit


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "deploy_generate", ROOT / "deploy" / "generate.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


def test_committed_mapping_and_dashboards_are_generated_from_the_monitoring_json():
    assert generate.stale_files(generate.render_all()) == [], (
        "run: uv run python deploy/generate.py"
    )


def test_check_mode_exits_nonzero_when_a_dashboard_is_edited_by_hand(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(generate, "DASHBOARDS_DIR", tmp_path / "dashboards")
    monkeypatch.setattr(generate, "MAPPING_FILE", tmp_path / "mapping.yml")
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    board = next((tmp_path / "dashboards").glob("*.json"))
    edited = json.loads(board.read_text())
    edited["title"] = "edited by hand"
    board.write_text(json.dumps(edited))
    (tmp_path / "dashboards" / "extra.json").write_text("{}")
    problems = generate.stale_files(generate.render_all())
    assert problems == [
        f"dashboards/{board.name} is out of date",
        "dashboards/extra.json is not generated from the JSON: delete it",
    ]
    assert generate.main(["--check"]) == 1


def test_every_shipped_metric_has_a_mapping_rule_and_every_dashboard_query_a_mapped_name():
    source = json.loads(generate.SOURCE.read_text())
    rules = yaml.safe_load(generate.MAPPING_FILE.read_text())["mappings"]
    names = {rule["name"] for rule in rules}
    metrics = [
        "version.upgrade.success_rate",
        "version.upgrade.batch_duration_minutes",
        "version.rollback.duration_ms",
        "version.upgrade.alert_total",
        "version.upgrade.paused_total",
    ]
    assert {rule["match"] for rule in rules} == {f"powerx.{m}" for m in metrics}
    exprs = [
        target["expr"]
        for board in source["dashboards"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
    for expr in exprs:
        assert any(name in expr for name in names), expr


def test_millisecond_timer_keeps_milliseconds_after_statsd_exporter():
    """statsd_exporter turns `|ms` timers into seconds; the rollback duration's name, panel
    unit and 180000 ms deadline say milliseconds, so its rule scales back by 1000."""
    rules = yaml.safe_load(generate.MAPPING_FILE.read_text())["mappings"]
    rule = next(r for r in rules if r["name"] == "powerx_version_rollback_duration_ms")
    assert rule["match_metric_type"] == "observer"
    assert rule["scale"] == 1000
    gauges = [r for r in rules if r["match_metric_type"] != "observer"]
    assert all("scale" not in r for r in gauges)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"dashboards": [{"uid": "a"}]}, "statsd_exporter.mappings is missing"),
        (
            {"statsd_exporter": {"mappings": [{"match": "a", "name": "a", "type": "set"}]}},
            "type 'set'",
        ),
        ({"statsd_exporter": {"mappings": [{"match": "a", "type": "gauge"}]}}, "lacks 'name'"),
    ],
)
def test_a_source_without_what_the_files_need_is_refused(source, message):
    with pytest.raises(generate.SourceError, match=message):
        generate.render_mapping(source)


def test_dashboards_without_uid_or_with_a_repeated_uid_are_refused():
    with pytest.raises(generate.SourceError, match="has no uid"):
        generate.render_dashboards({"dashboards": [{"title": "x"}]})
    with pytest.raises(generate.SourceError, match="used twice"):
        generate.render_dashboards({"dashboards": [{"uid": "a"}, {"uid": "a"}]})
