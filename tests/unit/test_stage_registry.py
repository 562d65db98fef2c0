"""The stage runtime's handler registry (shared/runtime/stage.py), without a broker or database: each handler gets
a batch's events of its types at once, validated once; what no handler may take is a dead letter."""

import orjson
from aiokafka import ConsumerRecord

from shared.contract import topics
from shared.contract.events import RefundApproved
from shared.runtime.stage import Handler, Stage
from tests.unit.stage_fakes import FakePool, FakeProducer


def _record(offset: int, event_type: str, data: dict) -> ConsumerRecord:
    envelope = {"id": f"e{offset}", "source": "refund-pipeline/approval", "type": event_type, "specversion": "1.0",
                "datacontenttype": "application/json", "data": data}
    value = orjson.dumps(envelope)
    return ConsumerRecord(topics.APPROVED, 0, offset, 0, 0, b"k", value, None, 1, len(value),
                          [("content-type", b"application/cloudevents+json")])


def _stage(**options) -> Stage:
    stage = Stage(schema="test", source="refund-pipeline/test", **options)
    stage.pool, stage.producer = FakePool(), FakeProducer()
    return stage


def _letters(stage: Stage) -> list[str]:
    return [orjson.loads(value)["data"]["error"] for topic, value in stage.pool.conn.outbox if topic == topics.DLQ]


def _approved(refund_id: str) -> dict:
    return {"refund_id": refund_id, "request_id": f"req-{refund_id}", "source": "shop-eu", "order_id": "ord-1",
            "amount": {"value": 2500, "currency": "EUR"}, "channel": "card", "region": "DE",
            "payment": {"id": f"pay-{refund_id}", "gateway": "sim", "channel": "card",
                        "captured": {"value": 2500, "currency": "EUR"}},
            "customer": {"id": "cus-1"}, "reason": "damaged", "requested_at": "2026-11-25T10:00:00Z",
            "accepted_at": "2026-11-25T10:00:00Z", "policy_version": "v1", "approved_at": "2026-11-25T10:00:01Z"}


async def test_a_handler_gets_the_batchs_events_of_its_type_at_once_validated_in_order():
    calls = []

    async def decide(conn, items):
        calls.append([item.data for item in items])
        return []

    stage = _stage(handlers={"refund.approved.v1": Handler(decide)})
    await stage.process([_record(1, "refund.approved.v1", _approved("rf_1")),
                         _record(2, "refund.approved.v1", {"refund_id": "rf_broken"}),
                         _record(3, "refund.approved.v1", _approved("rf_3"))])
    assert len(calls) == 1
    assert all(isinstance(data, RefundApproved) for data in calls[0])
    assert [data.refund_id for data in calls[0]] == ["rf_1", "rf_3"]
    (letter,) = _letters(stage)
    assert letter.startswith("invalid refund.approved.v1 data:") and "rf_broken" not in letter


async def test_an_unknown_type_or_one_off_its_topic_is_a_dead_letter_and_the_rest_nobody_handles_is_skipped():
    async def decide(conn, items):
        return []

    stage = _stage(handlers={"refund.accepted.v1": Handler(decide)})
    await stage.process([_record(1, "refund.approved.v2", _approved("rf_1")),
                         _record(2, "refund.denied.v1", {"refund_id": "rf_2"}),
                         _record(3, "refund.approved.v1", _approved("rf_3"))])  # on its topic: not this stage's
    assert _letters(stage) == ["unknown_type: refund.approved.v2 is not a contract event type",
                               "wrong_topic: refund.denied.v1 belongs on refunds.denied"]


async def test_a_default_handler_takes_every_type_no_handler_is_registered_for():
    seen = []

    async def everything(conn, items):
        seen.extend(item.event.get_type() for item in items)
        return []

    stage = _stage(default=Handler(everything, validated=False))
    await stage.process([_record(1, "refund.approved.v2", {}), _record(2, "refund.denied.v1", {})])
    assert seen == ["refund.approved.v2", "refund.denied.v1"]
    assert _letters(stage) == []


async def test_what_a_handler_took_is_handed_over_per_committed_transaction_and_dropped_with_a_rolled_back_one():
    """Approval's parked decisions and payout's claimed intents go to their workers only once stored."""
    taking: list[str] = []
    hooks: list[tuple[str, list[str]]] = []

    async def decide(conn, items):
        taking.extend(item.data.refund_id for item in items)
        if "rf_poison" in taking:
            raise ValueError("a bug this refund trips")
        return []

    def hook(name: str):
        def called() -> None:
            hooks.append((name, list(taking)))
            taking.clear()
        return called

    stage = _stage(handlers={"refund.approved.v1": Handler(decide)}, on_commit=hook("commit"),
                   on_rollback=hook("rollback"))
    await stage.process([_record(n, "refund.approved.v1", _approved(refund_id))
                         for n, refund_id in enumerate(["rf_1", "rf_poison", "rf_3"])])
    # The batch fails as a whole, then goes one by one: the poison one rolls back alone (and is a dead letter).
    assert hooks == [("rollback", ["rf_1", "rf_poison", "rf_3"]), ("commit", ["rf_1"]),
                     ("rollback", ["rf_poison"]), ("commit", ["rf_3"])]
    assert len(_letters(stage)) == 1
