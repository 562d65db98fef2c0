"""End-to-end: a real Prometheus sees approval stuck, the stuck-stage alert goes pending then firing, and clears.

Intake is restarted with a 1-second intake and 2-second approval SLA (SLA_FILE; deadlines are
cumulative, so a refund is due out of approval 3 seconds after it arrived); Prometheus scrapes
every second and evaluates a variant of the real deploy/prometheus/rules.yml whose `for:`
durations are 5 seconds (devstack.prometheus.fast_rules).
While approval is stopped its own gauges vanish; the overdue count comes from notify's projection.
"""

from pathlib import Path

import httpx
import pytest

from devstack.prometheus import fast_rules
from tests.integration.helpers import publish, valid_request, wait_until
from tests.integration.service_fixtures import service_configured

ROOT = Path(__file__).resolve().parents[2]
SLA = """version: "stuck-stage-test"
default: {intake: 1s, approval: 2s, payout: 1d, reconcile: 2d, notify: 15m}
"""


@pytest.fixture
def fast_sla_intake(stack, tmp_path):
    (tmp_path / "sla.yaml").write_text(SLA)
    try:
        with service_configured(stack, "intake", SLA_FILE=str(tmp_path / "sla.yaml")):
            yield
    finally:
        stack.start_service("approval")  # whatever the test did


@pytest.fixture
def prometheus(stack, tmp_path, fast_sla_intake):
    rules = fast_rules(ROOT / "deploy/prometheus/rules.yml", tmp_path / "rules-fast.yml", for_="5s")
    url = stack.start_prometheus(rule_files=[rules], scrape_interval="1s", evaluation_interval="1s")
    try:
        yield httpx.AsyncClient(base_url=url, timeout=10)
    finally:
        stack.stop_prometheus()


async def query(prom, expr: str) -> float | None:
    result = (await prom.get("/api/v1/query", params={"query": expr})).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


async def overdue(prom) -> float | None:
    return await query(prom, 'max by (stage) (refund_stage_overdue{stage="approval"})')


async def alert_state(prom, name: str = "RefundStageOverdue", **labels: str) -> str | None:
    labels = labels or {"stage": "approval"}
    alerts = (await prom.get("/api/v1/alerts")).json()["data"]["alerts"]
    states = [a["state"] for a in alerts
              if a["labels"]["alertname"] == name and all(a["labels"].get(k) == v for k, v in labels.items())]
    return states[0] if states else None


async def test_stopped_approval_raises_overdue_and_the_alert_then_both_clear(stack, producer, prometheus, db):
    prom = prometheus
    # Earlier tests of the session leave reviews waiting under short SLAs, overdue now or parked at
    # expiry later, which stay overdue (and page) by design until someone acts; this test is about
    # refunds stuck behind a stopped approval, so it starts from a queue without them.
    await db.execute("UPDATE approval.reviews SET state = 'denied' WHERE state IN ('open', 'expired')")
    await wait_until(lambda: _equals(overdue(prom), 0.0), timeout=60)  # scraped, nothing stuck yet
    # The rule may have been evaluated on the scrape before, with those reviews still overdue: it leaves
    # `pending` at the next evaluation (1 s), so wait for that, then require that no alert remains.
    await wait_until(lambda: _is_none(alert_state(prom)), timeout=15, every=0.5)
    assert await alert_state(prom) is None

    stack.stop_service("approval")
    seen = set()

    async def arriving_and_pending():
        await publish(producer, valid_request())  # refunds keep arriving while approval is down
        state = await alert_state(prom)
        seen.add(state)
        return state == "pending" and (await overdue(prom) or 0) > 0

    await wait_until(arriving_and_pending, timeout=60, every=1.0)
    assert await overdue(prom) >= 1

    async def firing():
        seen.add(state := await alert_state(prom))
        return state == "firing"

    await wait_until(firing, timeout=60, every=0.5)
    assert "pending" in seen and (await overdue(prom)) >= 1
    # The overdue count comes from notify's watch: approval's own target is down and also alerting.
    assert await query(prom, 'up{job="refund-approval"}') == 0
    assert await query(prom, 'refund_stage_overdue{stage="approval",job="refund-notify"}') >= 1
    assert await query(prom, 'refund_stage_overdue{stage="approval",job="refund-approval"}') is None
    await wait_until(lambda: _equals(alert_state(prom, "RefundServiceDown", job="refund-approval"), "firing"),
                     timeout=30, every=0.5)

    stack.start_service("approval")
    await wait_until(lambda: _equals(overdue(prom), 0.0), timeout=60, every=0.5)
    await wait_until(lambda: _is_none(alert_state(prom)), timeout=60, every=0.5)


async def _equals(value_coro, expected) -> bool:
    return await value_coro == expected


async def _is_none(value_coro) -> bool:
    return await value_coro is None
