"""The Grafana dashboard, the Prometheus config, the compose profile and docs/observability.md agree
with the metrics chatgw really exports (read from real GatewayMetrics and WorkerMetrics registries)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/chatgw.json"

# The series a family exposes, by type (prometheus_client names a counter family without _total).
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
PROMQL_WORDS |= {"and", "or", "unless"}


def families(registry: CollectorRegistry) -> dict[str, str]:
    return {metric.name: metric.type for metric in registry.collect()}


@pytest.fixture(scope="module")
def exported() -> dict[str, str]:
    """Every metric family chatgw exports: name -> type."""
    found = {**families(GatewayMetrics().registry), **families(WorkerMetrics().registry)}
    assert found, "no metrics collected"
    return found


def series_to_family(exported: dict[str, str]) -> dict[str, str]:
    return {name + suffix: name for name, kind in exported.items() for suffix in SERIES_SUFFIXES[kind]}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, labels or variables)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    expr = re.sub(r"(?<![\w:])(?:\d+(?:ms|[smhdwy]))+(?![\w:])", "", expr)  # durations (offset 5m)
    expr = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", "", expr)  # numbers
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function (or an aggregation) being called
        if match.group(0) not in PROMQL_WORDS:
            names.add(match.group(0))
    return names


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return panels


def dashboard_expressions() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def test_the_promql_reader_finds_metric_names() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, code) (rate(a_seconds_bucket{code="x"}[$__rate_interval])))'
        " / on (code) group_left sum without (instance) (b_total offset 5m) + 1e3 * max(c:rule)"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c:rule"}
    assert metric_names("sum(rate(x_total[5m])) > bool 0") == {"x_total"}


def test_every_dashboard_expression_selects_exported_series(exported: dict[str, str]) -> None:
    series = series_to_family(exported)
    used: set[str] = set()
    expressions = dashboard_expressions()
    assert len(expressions) >= 15
    for expr in expressions:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - series.keys()
        assert not unknown, f"{expr!r} selects series chatgw does not export: {sorted(unknown)}"
        used |= {series[name] for name in names}
    assert used == exported.keys(), f"not on the dashboard: {sorted(exported.keys() - used)}"


def test_quantiles_read_histogram_buckets_by_le(exported: dict[str, str]) -> None:
    for expr in dashboard_expressions():
        if "histogram_quantile" in expr:
            assert "by (le)" in expr and "_bucket" in expr, expr
            for name in metric_names(expr):
                assert exported[name.removesuffix("_bucket")] == "histogram", expr


def test_panels_use_the_provisioned_data_source() -> None:
    datasources = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
    provisioned = yaml.safe_load(datasources.read_text())
    uid = provisioned["datasources"][0]["uid"]
    for panel in dashboard_panels():
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids))


def test_compose_profile_mounts_files_that_exist() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    profiled = {name for name, s in services.items() if "observability" in s.get("profiles", [])}
    assert profiled == {"prometheus", "grafana"}
    for name in profiled:
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
    grafana_mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home in grafana_mounts
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/chatgw.yml").read_text())
    assert Path(home).parent.as_posix() == provider["providers"][0]["options"]["path"]


def test_prometheus_scrapes_every_gateway_and_the_workers_metrics_port() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    gateways = {
        f"{name}:{s['environment']['CHATGW_PORT']}"
        for name, s in services.items()
        if s.get("command") == ["chatgw", "gateway"]
    }
    assert gateways and set(jobs["chatgw-gateway"]["static_configs"][0]["targets"]) == gateways
    worker_port = int(services["worker"]["environment"]["CHATGW_WORKER_METRICS_PORT"])
    discovery = jobs["chatgw-worker"]["dns_sd_configs"][0]
    assert discovery["names"] == ["worker"] and discovery["port"] == worker_port


def test_docs_table_lists_exactly_the_exported_metrics(exported: dict[str, str]) -> None:
    text = (ROOT / "docs/observability.md").read_text()
    documented = dict(re.findall(r"^\| `(chatgw_\w+)` \| (\w+) \|", text, flags=re.M))
    # Counters are documented as queried: with _total.
    as_queried = {name + ("_total" if kind == "counter" else ""): kind for name, kind in exported.items()}
    assert documented == as_queried
