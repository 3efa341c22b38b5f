"""The Grafana dashboard (deploy/grafana/dashboards/flywheel.json) queries only metrics the
services export, and the scrape configurations reach every service's metrics port."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

from flywheel.mesh.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "flywheel.json"
# The composition root of each service: importing it registers every metric it exports.
APPS = [f"flywheel.{s.name}.app" for s in SERVICES]
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def queried_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", ())]
    assert exprs
    return {name for expr in exprs for name in re.findall(r"\bflywheel_[a-z0-9_]+", expr)}


def exported_metrics() -> set[str]:
    for module in APPS:
        importlib.import_module(module)
    return {family.name for family in REGISTRY.collect() if family.name.startswith("flywheel_")}


def base_name(sample: str, families: set[str]) -> str:
    if sample in families:
        return sample
    for suffix in _SUFFIXES:
        if sample.endswith(suffix) and sample.removesuffix(suffix) in families:
            return sample.removesuffix(suffix)
    return sample


def test_every_metric_the_dashboard_queries_is_exported_by_a_service():
    exported = exported_metrics()
    missing = {m for m in queried_metrics() if base_name(m, exported) not in exported}
    assert not missing, f"the dashboard queries metrics no service exports: {sorted(missing)}"


def test_the_dashboard_covers_the_flywheel():
    queried = {base_name(m, exported_metrics()) for m in queried_metrics()}
    for wanted in ("flywheel_ingest_events_accepted", "flywheel_kafka_consumer_lag",
                   "flywheel_inference_predict_seconds", "flywheel_inference_batch_size",
                   "flywheel_feedback_join", "flywheel_training_live_metric",
                   "flywheel_training_triggers", "flywheel_training_runs",
                   "flywheel_training_stage_seconds", "flywheel_training_alias_changes",
                   "flywheel_training_refusals"):
        assert wanted in queried, wanted


def test_prometheus_scrapes_each_service_at_its_compose_metrics_port():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"]
               for t in group["targets"]}
    assert targets == {f"{s.name}:{s.metrics_port}" for s in SERVICES}


def test_a_service_monitor_per_service():
    folder = ROOT / "deploy" / "k8s" / "overlays" / "monitoring"
    docs = [d for d in yaml.safe_load_all((folder / "servicemonitors.yaml").read_text()) if d]
    selected = {d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] for d in docs}
    assert selected == {s.name for s in SERVICES}
    assert all(d["kind"] == "ServiceMonitor" and d["spec"]["endpoints"][0]["port"] == "metrics"
               for d in docs)
