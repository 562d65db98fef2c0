"""The matcher on the real PostgreSQL: several lines of one refund in one pass settle in order, as one at a time.

The reconcile service is stopped meanwhile, so its own matcher takes none of these lines.
"""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from services.reconcile.handlers import SOURCE, Matcher, record_paid
from shared.contract import topics
from shared.runtime.db import create_pool
from shared.contract.events import TYPE_OF, RefundPaid
from shared.contract.money import Money
from shared.runtime.stage import Handler, Stage

pytestmark = pytest.mark.integration
GATEWAY = "rounds-test"  # a gateway no other test settles on


@pytest.fixture(scope="module")
def reconcile_stopped(stack):
    stack.stop_service("reconcile")
    yield
    stack.start_service("reconcile")


class RecordingProducer:
    """Stands in for Kafka: what the stage publishes after commit, acked at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None, headers=None) -> asyncio.Future:
        self.sent.append((topic, value))
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


@pytest.fixture
async def matcher(stack, reconcile_stopped):
    pool = await create_pool(stack.dsn)
    stage = Stage(schema="reconcile", source=SOURCE, handlers={TYPE_OF[RefundPaid]: Handler(record_paid)})
    stage.pool, stage.producer = pool, RecordingProducer()
    yield Matcher(stage, sla_seconds=3600, missing_internally_after_seconds=3600, max_fee_bps=300)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM reconcile.outbox WHERE id = ANY($1)", stage._published)
        await conn.execute("DELETE FROM reconcile.discrepancy_audit a USING reconcile.discrepancies d "
                           "WHERE a.discrepancy_id = d.id AND d.gateway = $1", GATEWAY)
        await conn.execute("DELETE FROM reconcile.discrepancies WHERE gateway = $1", GATEWAY)
        await conn.execute("DELETE FROM reconcile.settlement_lines WHERE gateway = $1", GATEWAY)
        await conn.execute("DELETE FROM reconcile.payouts WHERE gateway = $1", GATEWAY)
    await pool.close()


async def paid(conn, ref: str, value: int = 2500) -> str:
    refund_id = "rf_" + uuid.uuid4().hex
    event = RefundPaid(refund_id=refund_id, request_id="req-" + ref, source="shop-test", order_id="ord-" + ref,
                       amount=Money(value=value, currency="EUR"), channel="card", region="DE", gateway=GATEWAY,
                       payout_id="po_" + refund_id[3:], gateway_ref=ref, paid_at=datetime.now(UTC))
    await conn.execute(
        "INSERT INTO reconcile.payouts (refund_id, gateway, gateway_ref, amount_value, currency, channel, refund, "
        "paid_at, expected_value, expected_currency) VALUES ($1, $2, $3, $4, 'EUR', 'card', $5, now(), $4, 'EUR')",
        refund_id, GATEWAY, ref, value, event.model_dump(mode="json"))
    return refund_id


async def line(conn, ref: str, value: int, kind: str = "refund") -> int:
    return await conn.fetchval(
        "INSERT INTO reconcile.settlement_lines (gateway, txn_id, gateway_ref, kind, amount_value, currency, "
        "fee_value) VALUES ($1, $2, $3, $4, $5, 'EUR', 0) RETURNING id", GATEWAY, "txn_" + uuid.uuid4().hex, ref,
        kind, value)


async def test_lines_of_one_refund_in_one_pass_each_see_what_the_line_before_left(matcher):
    n = uuid.uuid4().hex[:8]
    refs = {name: f"re_{name}_{n}" for name in ("back", "wrong", "twice")}
    async with matcher.stage.pool.acquire() as conn:
        refunds = {name: await paid(conn, ref) for name, ref in refs.items()}
        lines = {
            "back": [await line(conn, refs["back"], 2500), await line(conn, refs["back"], 2500, "refund_reversal")],
            "wrong": [await line(conn, refs["wrong"], 2400), await line(conn, refs["wrong"], 2500, "refund_reversal")],
            "twice": [await line(conn, refs["twice"], 2500), await line(conn, refs["twice"], 2500)],
        }

    assert await matcher.match_once() >= 6
    db = matcher.stage.pool

    states = {r["id"]: r["state"] for r in await db.fetch(
        "SELECT id, state FROM reconcile.settlement_lines WHERE gateway = $1", GATEWAY)}
    # Matched, then reversed: both lines are `reversed`. A mismatch, then a reversal: the same.
    assert [states[i] for i in lines["back"]] == ["reversed", "reversed"]
    assert [states[i] for i in lines["wrong"]] == ["discrepancy", "reversed"]
    # Matched, then the same refund again: the second is a duplicate, the first stays matched.
    assert [states[i] for i in lines["twice"]] == ["matched", "discrepancy"]
    payouts = {r["refund_id"]: (r["state"], r["category"]) for r in await db.fetch(
        "SELECT refund_id, state, category FROM reconcile.payouts WHERE gateway = $1", GATEWAY)}
    assert payouts == {refunds["back"]: ("discrepancy", "reversed"), refunds["wrong"]: ("discrepancy", "reversed"),
                       refunds["twice"]: ("matched", "matched")}
    discrepancies = {(r["gateway_ref"], r["category"], r["status"], r["resolution"]) for r in await db.fetch(
        "SELECT gateway_ref, category, status, resolution FROM reconcile.discrepancies WHERE gateway = $1", GATEWAY)}
    # The reversal superseded the mismatch the line before it opened in the same pass.
    assert discrepancies == {
        (refs["back"], "reversed", "open", None),
        (refs["wrong"], "amount_mismatch", "auto_resolved", "superseded by a reversal"),
        (refs["wrong"], "reversed", "open", None),
        (refs["twice"], "duplicate", "open", None),
    }
    audited = await db.fetchval(
        "SELECT count(*) FROM reconcile.discrepancy_audit a JOIN reconcile.discrepancies d ON d.id = a.discrepancy_id "
        "WHERE d.gateway = $1 AND a.action = 'auto_resolved' AND a.actor = 'reconcile-matcher'", GATEWAY)
    assert audited == 1
    # One event per line that is not a duplicate, each refund's in line order.
    kinds = [(topic, name) for topic, value in matcher.stage.producer.sent
             for name, refund_id in refunds.items() if refund_id.encode() in value]
    assert [k for k in kinds if k[1] == "back"] == [(topics.RECONCILED, "back"), (topics.DISCREPANCY, "back")]
    assert [k for k in kinds if k[1] == "wrong"] == [(topics.DISCREPANCY, "wrong"), (topics.DISCREPANCY, "wrong")]
    assert [k for k in kinds if k[1] == "twice"] == [(topics.RECONCILED, "twice")]
    await matcher.match_once()  # deletes the acked outbox rows
