"""Every Grafana panel's query parses in a real Prometheus and names only metrics the running services export.

A metric counts as exported when a service's /metrics declares it (HELP/TYPE), even before its
first observation; recording-rule outputs from deploy/prometheus/rules.yml count too.
"""

import json
import re
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from devstack.stack import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
            "offset", "inf", "nan"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",), "untyped": ("",)}


def panel_queries() -> list[tuple[str, str]]:
    return [(f"{path.stem}: {panel['title']}", target["expr"])
            for path in DASHBOARDS for panel in json.loads(path.read_text())["panels"]
            for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)            # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)                      # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                     # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
    return {name for name in names if name.lower() not in KEYWORDS}


def exported(stack) -> set[str]:
    names = set()
    for service in SERVICES:
        text = httpx.get(f"{stack.service_url(service)}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def recorded() -> set[str]:
    groups = yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def test_metric_name_extraction():
    assert metric_names('sum by (stage, le) (rate(a_bucket{stage="x"}[5m])) / 0.01 - time()') == {"a_bucket"}
    assert metric_names("1 - stage:ratio:rate1h and on (stage) b") == {"stage:ratio:rate1h", "b"}


@pytest.fixture
def prometheus(stack):
    url = stack.start_prometheus()
    try:
        yield httpx.Client(base_url=url, timeout=10)
    finally:
        stack.stop_prometheus()


def test_every_panel_query_uses_exported_metrics_and_parses(stack, prometheus):
    queries = panel_queries()
    assert len(queries) >= 15
    known = exported(stack) | recorded()
    assert "refund_stage_overdue" in known and "refund_drill_last_success_timestamp_seconds" in known
    unknown = {title: sorted(metric_names(expr) - known) for title, expr in queries if metric_names(expr) - known}
    assert not unknown, f"panels query metrics no service exports: {unknown}"
    for title, expr in queries:
        assert metric_names(expr), f"{title}: no metric in {expr!r}"
        answer = prometheus.get("/api/v1/query", params={"query": expr})
        assert answer.status_code == 200 and answer.json()["status"] == "success", f"{title}: {answer.text}"



async def test_every_service_sweeps_its_stage_and_measures_its_lag(stack):
    """Real samples (not just declarations): each service's own stage gauges and its group's lag;
    notify also reports the stages it watches from the lifecycle."""
    from tests.integration.helpers import wait_until

    expected = {service: {("refund_stage_inflight", "stage", service),
                          ("refund_consumer_lag_records", "group", f"refund-{service}")} for service in SERVICES}
    expected["notify"] |= {("refund_stage_overdue", "stage", stage) for stage in ("approval", "payout", "reconcile")}
    missing: dict = {}

    async def measured() -> bool:
        async with httpx.AsyncClient(timeout=10) as client:
            for service, wanted in expected.items():
                text = (await client.get(f"{stack.service_url(service)}/metrics")).text
                have = {(s.name, label, s.labels.get(label)) for f in text_string_to_metric_families(text)
                        for s in f.samples for (_, label, _) in wanted if s.value >= 0}
                missing[service] = wanted - have
        return not any(missing.values())

    try:
        await wait_until(measured, timeout=60, every=1.0)
    except AssertionError:
        raise AssertionError(f"not exported: {missing}") from None
