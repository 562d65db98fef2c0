"""A stage's dead letters without a broker or database (shared/runtime/dead_letters.py, stage.py): each one
is kept with its reason code next to its DLQ event, what is dead-lettered is not claimed in the inbox (so a
replay runs), and the breaker opens past its limit in a rolling minute and closes on demand."""

import base64

import orjson
from aiokafka import ConsumerRecord

from shared.contract import topics
from shared.runtime.dead_letters import DeadLetterBreaker, decoded
from shared.runtime.stage import Handler, Stage
from tests.unit.stage_fakes import FakePool, FakeProducer


def _record(offset: int, value: bytes) -> ConsumerRecord:
    return ConsumerRecord(topics.APPROVED, 0, offset, 0, 0, b"k", value, None, 1, len(value),
                          [("content-type", b"application/cloudevents+json")])


def _event(offset: int, event_type: str, source: str = topics.APPROVAL_SOURCE) -> ConsumerRecord:
    return _record(offset, orjson.dumps({"id": f"e{offset}", "source": source, "type": event_type,
                                         "specversion": "1.0", "datacontenttype": "application/json",
                                         "data": {"refund_id": "rf_1"}}))


class ClaimsRecorded(FakePool):
    def __init__(self) -> None:
        super().__init__()
        self.claimed: list[str] = []
        fetch = self.conn.fetch

        async def recording(sql, *args):
            if "inbox" in sql:
                self.claimed += args[1]
            return await fetch(sql, *args)

        self.conn.fetch = recording


def _stage(limit: int = 0, **options) -> Stage:
    stage = Stage(schema="test", source="refund-pipeline/test", **options)
    stage.pool, stage.producer = ClaimsRecorded(), FakeProducer()
    stage.breaker = DeadLetterBreaker("test", limit)
    return stage


async def _nothing(conn, items):
    return []


async def test_each_dead_letter_is_kept_with_its_reason_code_beside_its_dlq_event_and_is_not_claimed():
    stage = _stage(handlers={"refund.approved.v1": Handler(_nothing)})
    await stage.process([_record(1, b"\xffnot json"), _event(2, "refund.approved.v1", source="shop-test"),
                         _event(3, "refund.approved.v9"), _event(4, "refund.approved.v1")])
    reasons = [reason for reason, _ in stage.pool.conn.dead_letters]
    assert reasons == ["not_cloudevent", "untrusted_source", "unknown_type", "invalid_data"]
    assert len([topic for topic, _ in stage.pool.conn.outbox if topic == topics.DLQ]) == 4
    # None of them is in the inbox: replayed once the cause is fixed, each is processed, not skipped as seen.
    assert stage.pool.conn.dead_letters and stage.pool.claimed == []


async def test_the_breaker_opens_past_its_limit_in_a_rolling_minute_and_closing_resumes_afresh():
    now = [1000.0]
    breaker = DeadLetterBreaker("test", limit_per_minute=3, clock=lambda: now[0])
    breaker.observe(3)
    assert not breaker.open
    now[0] += 61  # the first three fell out of the minute
    breaker.observe(3)
    assert not breaker.open and breaker.last_minute() == 3
    breaker.observe(1)
    assert breaker.open and breaker.status()["opened_at"] and breaker.status()["last_minute"] == 4
    breaker.close("sam", "rolled back")
    assert not breaker.open and breaker.last_minute() == 0
    off = DeadLetterBreaker("test", limit_per_minute=0, clock=lambda: now[0])
    off.observe(10_000)
    assert not off.open


def test_a_breaker_without_a_limit_forgets_what_left_the_minute():
    # With the limit off nothing reads the minute, so only observing may trim it; else it grows for ever.
    now = [1000.0]
    off = DeadLetterBreaker("test", limit_per_minute=0, clock=lambda: now[0])
    for _ in range(5):
        off.observe(1_000)
        now[0] += 61
    assert len(off._times) == 1_000


async def test_a_stage_dead_lettering_past_its_limit_opens_its_breaker():
    stage = _stage(limit=2, handlers={"refund.approved.v1": Handler(_nothing)})
    await stage.process([_record(n, b"garbage") for n in range(2)])
    assert not stage.breaker.open
    await stage.process([_record(2, b"garbage")])
    assert stage.breaker.open


def test_a_payload_reads_as_json_else_text_else_base64():
    assert decoded(b'{"a": 1}') == ({"a": 1}, "json")
    assert decoded(b"plain words") == ("plain words", "text")
    assert decoded(b"\xff\x00") == (base64.b64encode(b"\xff\x00").decode(), "base64")


class FakeConsumer:
    def __init__(self, *assigned: str) -> None:
        self.assigned, self.held = set(assigned), set()

    def assignment(self):
        return set(self.assigned)

    def pause(self, *partitions):
        self.held |= set(partitions)

    def resume(self, *partitions):
        self.held -= set(partitions)

    def paused(self):
        return set(self.held)


def test_a_consumer_holds_its_partitions_while_the_breaker_is_open_and_counts_as_healthy():
    from shared.runtime.consume import StageConsumer
    from shared.runtime.consumer_health import ConsumerHealth

    stage = _stage(limit=1)
    loop = StageConsumer(stage, [topics.APPROVED], group_id="g", max_records=10)
    loop.consumer = FakeConsumer("p0", "p1")
    stage.breaker.observe(2)
    loop.hold_if_breaker_open()
    assert loop.held and loop.consumer.paused() == {"p0", "p1"}
    clock = [1e9]
    assert ConsumerHealth([loop], 60, 300, clock=lambda: clock[0]).ready()  # not fetching, on purpose
    stage.breaker.close("sam", "fixed")
    loop.hold_if_breaker_open()
    assert not loop.held and loop.consumer.paused() == set()
