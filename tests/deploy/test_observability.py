"""deploy/prometheus.yml and deploy/grafana/multipair.json match the metrics the code serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from multipair.broker_schema import counters
from multipair.console.embedded import DEFAULT_UP_METRICS_PORT
from multipair.supervisor.metrics import HostMetrics, LaneStatus
from multipair.up import add_up_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = json.loads((DEPLOY / "grafana" / "multipair.json").read_text(encoding="utf-8"))


def served_names() -> set[str]:
    """Every sample name a supervisor's /metrics can show (per-lane series included)."""
    metrics = HostMetrics("h", per_lane=True)
    metrics.baseline("lane", {})
    (bucket, _), (total, micros) = counters.tx_duration("purchase", 0.1)
    metrics.lane_totals(
        {"lane": {counters.tx_count("purchase", "success"): "1", bucket: "1", total: str(micros)}}
    )
    metrics.lanes_seen({"lane": LaneStatus.PAIRED_CONNECTED}, {"lane": 1})
    metrics.lease_renewal(0.01)
    return {
        sample.name
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
    }


def test_prometheus_scrapes_the_port_multipair_up_serves() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert ("multipair", "/metrics") == (job["job_name"], job["metrics_path"])
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert f"127.0.0.1:{DEFAULT_UP_METRICS_PORT}" in targets
    import argparse

    parser = argparse.ArgumentParser()
    up = add_up_parser(parser.add_subparsers())
    assert DEFAULT_UP_METRICS_PORT == up.parse_args([]).metrics_port


def test_every_dashboard_query_names_metrics_the_supervisor_serves() -> None:
    served = served_names()
    exprs = [target["expr"] for panel in DASHBOARD["panels"] for target in panel.get("targets", [])]
    named = {name for expr in exprs for name in re.findall(r"\b(multipair_[a-z_]+)\b", expr)}
    assert named, exprs
    assert set() == named - served, f"the dashboard asks for series nobody serves: {named - served}"


def test_the_dashboard_has_the_panels_ops_look_at_first() -> None:
    titles = {panel["title"] for panel in DASHBOARD["panels"]}
    assert {
        "Lanes by status",
        "Transactions per minute by result",
        "Outcome time p50 / p99",
        "Lane restarts by reason (per 5 min)",
        "Redis errors per minute",
    } <= titles
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    quantiles = next(p for p in DASHBOARD["panels"] if p["title"] == "Outcome time p50 / p99")
    assert ["0.5", "0.99"] == [
        re.search(r"histogram_quantile\(([0-9.]+)", t["expr"]).group(1)  # type: ignore[union-attr]
        for t in quantiles["targets"]
    ]
