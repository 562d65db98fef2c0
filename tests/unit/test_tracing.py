"""Trace context on the envelope and through a stage (shared/runtime/tracing.py), without a broker or database.

Tracing off (the default) a stage passes each inbound event's `traceparent` on unchanged; on, the
events a stage emits carry the span of the inbound event they came from.
"""

import orjson
import pytest
from aiokafka import ConsumerRecord
from cloudevents.core.bindings import kafka as ce_kafka
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.contract import topics
from shared.runtime import tracing
from shared.contract.envelope import decode, encode
from shared.contract.events import RefundStatus, Status
from shared.contract.ids import refund_id_for
from shared.runtime.stage import Handler, Stage, one_at_a_time
from tests.unit.stage_fakes import FakePool, FakeProducer

UPSTREAM = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTHER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _status(refund_id: str = "rf_1") -> RefundStatus:
    return RefundStatus(refund_id=refund_id, request_id="r", source="s", order_id="o", status=Status.ACCEPTED,
                        amount={"value": 100, "currency": "JPY"}, updated_at="2026-01-01T00:00:00Z")


def test_encode_and_decode_carry_traceparent_in_structured_mode():
    out = encode(_status(), source="refund-pipeline/notify", key="rf_1", traceparent=UPSTREAM)
    assert out.traceparent == UPSTREAM
    assert orjson.loads(out.value)["traceparent"] == UPSTREAM
    assert tracing.traceparent_of(decode(out.value, list(out.headers.items()))) == UPSTREAM


def test_decode_reads_ce_traceparent_in_binary_mode():
    binary = ce_kafka.to_binary_event(decode(encode(_status(), source="s", key="k", traceparent=UPSTREAM).value, []))
    assert binary.headers["ce_traceparent"] == UPSTREAM.encode()
    assert tracing.traceparent_of(decode(binary.value, list(binary.headers.items()))) == UPSTREAM


def test_with_traceparent_rerenders_the_value_and_replaces_an_older_one():
    out = encode(_status(), source="s", key="rf_1", traceparent=UPSTREAM)
    again = out.with_traceparent(OTHER)
    event = decode(again.value, list(again.headers.items()))
    assert (tracing.traceparent_of(event), again.traceparent) == (OTHER, OTHER)
    assert again.value.count(b"traceparent") == 1
    assert (event.get_id(), event.get_data()) == (out.event_id, orjson.loads(out.value)["data"])


def test_a_malformed_traceparent_is_ignored():
    for bad in ("nope", "00-" + "0" * 32 + "-b7ad6b7169203331-01", UPSTREAM.upper()):
        assert tracing.valid(bad) is None
    assert tracing.valid(UPSTREAM) == UPSTREAM


# ---------------------------------------------------------------- through a stage, on fakes
def _record(topic: str, key: str, value: bytes, headers: list, offset: int) -> ConsumerRecord:
    return ConsumerRecord(topic, 0, offset, 0, 0, key.encode(), value, None, len(key), len(value), headers)


def _structured(topic: str, key: str, data: dict, offset: int, traceparent: str | None,
                source: str = "shop-test") -> ConsumerRecord:
    envelope = {"id": f"e{offset}", "source": source, "type": "refund.requested.v1", "specversion": "1.0",
                "datacontenttype": "application/json", "data": data}
    if traceparent:
        envelope["traceparent"] = traceparent
    return _record(topic, key, orjson.dumps(envelope), [("content-type", b"application/cloudevents+json")], offset)


def _binary(topic: str, key: str, data: dict, offset: int, traceparent: str) -> ConsumerRecord:
    headers = [("ce_id", f"e{offset}".encode()), ("ce_source", b"shop-test"), ("ce_type", b"refund.requested.v1"),
               ("ce_specversion", b"1.0"), ("ce_traceparent", traceparent.encode()),
               ("content-type", b"application/json")]
    return _record(topic, key, orjson.dumps(data), headers, offset)


async def _emits_status_per_event(conn, item):
    """A stage that answers each event with a status for its refund (as intake answers a request)."""
    data = item.event.get_data()
    refund_id = data.get("refund_id") or refund_id_for(item.event.get_source(), data["request_id"])
    return [encode(_status(refund_id), source="refund-pipeline/test", key=refund_id)]


def _stage() -> tuple[Stage, FakeProducer]:
    stage = Stage(schema="test", source="refund-pipeline/test", default=Handler(one_at_a_time(_emits_status_per_event), validated=False),
                  trusted={})
    stage.pool, stage.producer = FakePool(), FakeProducer()
    return stage, stage.producer


def _sent_traceparents(producer: FakeProducer) -> dict[str, str | None]:
    return {key.decode(): tracing.traceparent_of(decode(value, [])) for _, key, value in producer.sent}


@pytest.fixture
def spans():
    """Tracing on, into memory, for one test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    exporter.tracer = provider.get_tracer("test")
    yield exporter
    tracing.use(None)


async def test_tracing_off_the_stage_passes_the_incoming_traceparent_on_unchanged():
    assert tracing.current_traceparent() is None  # off: the default
    stage, producer = _stage()
    records = [
        # A request keyed by its request_id, answered under the refund_id.
        _structured(topics.REQUESTED, "req-1", {"request_id": "req-1"}, 1, UPSTREAM),
        _binary(topics.APPROVED, "rf_b", {"refund_id": "rf_b"}, 2, OTHER),
        _structured(topics.APPROVED, "rf_c", {"refund_id": "rf_c"}, 3, None),
    ]
    await stage.process(records)
    assert _sent_traceparents(producer) == {refund_id_for("shop-test", "req-1"): UPSTREAM, "rf_b": OTHER,
                                            "rf_c": None}


async def test_tracing_on_each_outgoing_event_carries_its_inbound_events_consumer_span(spans):
    stage, producer = _stage()
    await stage.process([_structured(topics.APPROVED, "rf_a", {"refund_id": "rf_a"}, 1, UPSTREAM),
                         _binary(topics.APPROVED, "rf_b", {"refund_id": "rf_b"}, 2, OTHER)])
    finished = spans.get_finished_spans()
    consumers = {span.attributes["messaging.kafka.message.key"]: span for span in finished
                 if span.kind == trace.SpanKind.CONSUMER and span.name == f"process {topics.APPROVED}"}
    assert {key: f"{span.parent.trace_id:032x}-{span.parent.span_id:016x}" for key, span in consumers.items()} == {
        "rf_a": UPSTREAM[3:52], "rf_b": OTHER[3:52]}
    sent = _sent_traceparents(producer)
    for key, span in consumers.items():
        assert sent[key] == f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-01"
    # Two events in one transaction: its span links to both, and is no trace's child.
    [batch] = [span for span in finished if span.name == "process batch"]
    assert batch.parent is None and {link.context.span_id for link in batch.links} == {
        span.context.span_id for span in consumers.values()}


async def test_tracing_on_a_single_event_batch_records_its_work_under_the_events_span(spans):
    stage, producer = _stage()
    await stage.process([_structured(topics.APPROVED, "rf_a", {"refund_id": "rf_a"}, 1, UPSTREAM)])
    [consumer] = spans.get_finished_spans()
    assert consumer.kind == trace.SpanKind.CONSUMER and consumer.context.trace_id == int(UPSTREAM[3:35], 16)
    assert _sent_traceparents(producer)["rf_a"].split("-")[2] == f"{consumer.context.span_id:016x}"


def test_outside_a_batch_encode_takes_the_current_span(spans):
    with spans.tracer.start_as_current_span("POST /v1/refunds") as span:
        out = encode(_status(), source="s", key="rf_1")
    assert out.traceparent.split("-")[1:3] == [f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"]


async def test_work_a_batch_defers_through_a_table_stores_the_traceparent_its_events_get(spans):
    stored = {}

    async def park(conn, item):  # as payout records an intent, to execute later
        stored[item.record.key.decode()] = tracing.traceparent_for(item.record.key.decode())
        return [encode(_status(item.record.key.decode()), source="refund-pipeline/test", key=item.record.key.decode())]

    stage = Stage(schema="test", source="refund-pipeline/test", default=Handler(one_at_a_time(park), validated=False), trusted={})
    stage.pool, stage.producer = FakePool(), FakeProducer()
    await stage.process([_structured(topics.APPROVED, "rf_a", {"refund_id": "rf_a"}, 1, UPSTREAM),
                         _structured(topics.APPROVED, "rf_b", {"refund_id": "rf_b"}, 2, OTHER)])
    assert stored == _sent_traceparents(stage.producer) and stored["rf_a"].split("-")[1] == UPSTREAM.split("-")[1]
    with spans.tracer.start_as_current_span("POST /v1/reviews/rf_a/decision") as request:
        assert tracing.traceparent_for("rf_a").split("-")[2] == f"{request.context.span_id:016x}"


def test_resume_continues_stored_traceparents_and_passes_them_on_when_off():
    with tracing.resume({"rf_a": UPSTREAM, "rf_b": None}, "payout attempt") as resumed:
        assert resumed.context("rf_a") is None
        stamped = tracing.stamp([encode(_status("rf_a"), source="s", key="rf_a"),
                                 encode(_status("rf_b"), source="s", key="rf_b")], resumed)
    assert [record.traceparent for record in stamped] == [UPSTREAM, None]
