"""One refund, one trace: the five services export OTLP/HTTP to a receiver in this test, and the
request's `traceparent` is continued from intake to notify (shared/runtime/tracing.py).

The test plays the platform: it publishes the request with a traceparent of its own, so the trace id is
known; every service runs with OTEL_EXPORTER_OTLP_ENDPOINT pointing here and a short export delay.
"""

import contextlib
import gzip
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)

from shared.contract import topics
from tests.integration.helpers import SOURCE, pay_for, refund_of, valid_request, wait_until
from tests.integration.service_fixtures import service_configured
from tools.platform import requested_record

pytestmark = pytest.mark.integration
SERVICES = ("intake", "approval", "payout", "reconcile", "notify")
CONSUMER, CLIENT = 5, 3  # opentelemetry.proto.trace.v1.Span.SpanKind


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict


def _value(any_value) -> object:
    return getattr(any_value, any_value.WhichOneof("value")) if any_value.WhichOneof("value") else None


class OtlpReceiver:
    """An OTLP/HTTP trace endpoint (`POST /v1/traces`, protobuf) keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver._keep(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(ReceivedSpan(
                        resource.get("service.name"), span.trace_id.hex(), span.span_id.hex(),
                        span.parent_span_id.hex(), span.name, span.kind,
                        {a.key: _value(a.value) for a in span.attributes}))
        with self.lock:
            self.spans += received

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def __enter__(self) -> "OtlpReceiver":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def otlp(stack):
    """Every service exporting to a receiver here, every 200 ms; as before after the test."""
    with OtlpReceiver() as receiver, contextlib.ExitStack() as services:
        for service in SERVICES:
            services.enter_context(service_configured(stack, service, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                                                      OTEL_BSP_SCHEDULE_DELAY="200"))
        yield receiver


def _consumer_spans(spans: list[ReceivedSpan], service: str, topic: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.service == service and s.kind == CONSUMER
            and s.attributes.get("messaging.destination.name") == topic]


def _is_db(span: ReceivedSpan) -> bool:
    return span.kind == CLIENT and "postgresql" in (span.attributes.get("db.system"),
                                                    span.attributes.get("db.system.name"))


def _is_gateway_refund(span: ReceivedSpan) -> bool:
    url = span.attributes.get("url.full") or span.attributes.get("http.url") or ""
    method = span.attributes.get("http.request.method") or span.attributes.get("http.method")
    return span.service == "payout" and span.kind == CLIENT and method == "POST" and url.endswith("/v1/refunds")


async def test_one_refund_is_one_trace_across_all_five_services(stack, otlp, producer, status_feed):
    trace_id, platform_span = secrets.token_hex(16), secrets.token_hex(8)
    request = await pay_for(valid_request())
    refund_id = refund_of(request)
    value, headers = requested_record(SOURCE, request)
    value = orjson.dumps({**orjson.loads(value), "traceparent": f"00-{trace_id}-{platform_span}-01"})
    await producer.send_and_wait(topics.REQUESTED, value, key=request["request_id"].encode(), headers=headers)
    assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=90)

    def missing(spans: list[ReceivedSpan]) -> list[str]:
        hops = [("intake", topics.REQUESTED), ("approval", topics.ACCEPTED), ("payout", topics.APPROVED),
                ("reconcile", topics.PAID), ("notify", topics.ACCEPTED), ("notify", topics.APPROVED),
                ("notify", topics.PAID), ("notify", topics.RECONCILED)]
        gaps = [f"{service} consuming {topic}" for service, topic in hops if not _consumer_spans(spans, service, topic)]
        gaps += [] if any(map(_is_gateway_refund, spans)) else ["the gateway call"]
        return gaps + ([] if any(map(_is_db, spans)) else ["a database span"])

    async def whole_trace():
        # Spans arrive as each service exports them: wait until every hop's are in.
        spans = otlp.trace(trace_id)
        return spans if not missing(spans) else None

    try:
        spans = await wait_until(whole_trace, timeout=30)
    except AssertionError:
        spans = otlp.trace(trace_id)
        raise AssertionError(f"trace {trace_id} lacks {missing(spans)}; has "
                             f"{sorted((s.service, s.name, s.kind) for s in spans)}; "
                             f"received {len(otlp.spans)} spans in all") from None
    assert {span.service for span in spans} >= set(SERVICES)
    by_id = {span.span_id: span for span in spans}

    def parents(service: str, topic: str) -> set[str | None]:
        return {by_id[s.parent_id].service if s.parent_id in by_id else s.parent_id
                for s in _consumer_spans(spans, service, topic)}

    # Each stage's consumer span is the child of a span of the stage that published the event.
    assert parents("intake", topics.REQUESTED) == {platform_span}
    assert parents("approval", topics.ACCEPTED) == {"intake"}
    assert parents("payout", topics.APPROVED) == {"approval"}
    assert parents("reconcile", topics.PAID) == {"payout"}
    assert parents("notify", topics.ACCEPTED) == {"intake"}
    assert parents("notify", topics.APPROVED) == {"approval"}
    assert parents("notify", topics.PAID) == {"payout"}
    assert parents("notify", topics.RECONCILED) == {"reconcile"}
    # Work deferred through a table continues the trace: the gateway call is under the payout's own span,
    # a child of the span that consumed the approval; the approval came from the payment's verification.
    gateway_call = next(span for span in spans if _is_gateway_refund(span))
    attempt = by_id[gateway_call.parent_id]
    assert (attempt.service, attempt.name) == ("payout", "payout attempt")
    assert by_id[attempt.parent_id] in _consumer_spans(spans, "payout", topics.APPROVED)
    [approved_by] = [by_id[i] for i in {s.parent_id for s in _consumer_spans(spans, "payout", topics.APPROVED)}]
    assert approved_by.name == "payment verification"
    assert by_id[approved_by.parent_id] in _consumer_spans(spans, "approval", topics.ACCEPTED)
    # Every span's parent is in the trace, but the platform's own (which only the platform records).
    assert {span.parent_id for span in spans} - by_id.keys() == {platform_span}
