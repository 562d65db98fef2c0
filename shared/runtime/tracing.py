"""OpenTelemetry traces across the stages, carried on Kafka as the CloudEvents `traceparent` extension.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (`configure`). Off, nothing is
instrumented and no span is made; a stage still passes each inbound event's
`traceparent` on, unchanged, to the events that inbound event causes, so a
trace that started upstream survives a stage that does not record.

The consume runtime calls two functions per batch; neither needs a per-event
context while handler code runs (handlers may take the whole batch), only that
the `with` encloses the batch's handling:

    with tracing.consume(inbound) as spans:   # one CONSUMER span per inbound event, parent = its
        outgoing = ...                       # traceparent; all ended when the block ends
        outgoing = tracing.stamp(outgoing, spans)   # before the outbox write

`stamp` gives each outgoing record that has no traceparent the span of the
inbound event with the same Kafka key (or the same refund: a request is keyed by
its request_id, its outcome by the refund_id), else the batch's span. While the
batch runs, the batch's span is current -- the event's own span when the batch
has one event, else a span linked to every event's -- so its SQL and HTTP calls
are recorded under it. Outside the consume loop (HTTP handlers, sweeps) `encode()`
takes the current span, so a request's span parents what it emits. Work a stage
defers through its own table stores `traceparent_for(refund_id)` with the row, and
the loop that picks the row up continues it (`resume`, or encode's `traceparent=`).
"""

import contextvars
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.contract import envelope
from shared.contract.ids import refund_id_for
from shared.contract.topics import REQUESTED

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shared.contract.envelope import Outgoing
    from shared.runtime.settings import ServiceSettings
    from shared.runtime.stage import Inbound

_propagator = TraceContextTextMapPropagator()
# The `Spans` of the batch running in this context (set once per batch, not per event): what the batch
# emits is stamped per event, not from the batch's span, so `current_traceparent()` leaves it to `stamp`.
_BATCH = otel_context.create_key("refund-pipeline.batch")

_tracer: trace.Tracer | None = None  # None: tracing is off
_provider = None


# ------------------------------------------------------------------ set-up (once per process, in make_app)
def configure(settings: "ServiceSettings", app: "FastAPI") -> None:
    """Export spans over OTLP/HTTP and instrument asyncpg, aiohttp and httpx clients and `app`, if an
    endpoint is set."""
    if not settings.otel_exporter_otlp_endpoint:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    if _provider is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased

        provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}),
                                  sampler=ParentBased(root=_NoBareClientCalls()))
        exporter = OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces")
        provider.add_span_processor(BatchSpanProcessor(exporter,
                                                       schedule_delay_millis=settings.otel_bsp_schedule_delay))
        trace.set_tracer_provider(provider)
        use(provider)
        AsyncPGInstrumentor().instrument(tracer_provider=provider)
        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
        AioHttpClientInstrumentor().instrument(tracer_provider=provider)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=_provider, excluded_urls="healthz,readyz,metrics",
                                       exclude_spans=["receive", "send"])


def use(provider) -> None:
    """Record spans with `provider` (None: tracing off). `configure` calls it; tests give an in-memory one."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("refund-pipeline") if provider is not None else None


def shutdown() -> None:
    """Export what is still buffered (at process stop)."""
    if _provider is not None:
        _provider.shutdown()


class _NoBareClientCalls(Sampler):
    """Root sampler: a database or HTTP call outside any trace (a sweep's poll, a relay's scan every few
    seconds) starts none; everything else starts one."""

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None) -> SamplingResult:
        return SamplingResult(Decision.DROP if kind == SpanKind.CLIENT else Decision.RECORD_AND_SAMPLE, attributes)

    def get_description(self) -> str:
        return "NoBareClientCalls"


# ------------------------------------------------------------------ the traceparent of one event
valid = envelope.valid_traceparent


def traceparent_of(event) -> str | None:
    """The CloudEvent's `traceparent` extension (structured: a member; binary: `ce_traceparent`)."""
    return valid(event.get_extension("traceparent")) if event is not None else None


def _format(span: Span) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def current_traceparent() -> str | None:
    """The current span's traceparent, for `encode()` outside a consumed batch; None when off or inside one."""
    if _tracer is None or otel_context.get_value(_BATCH) is not None:
        return None
    span = trace.get_current_span()
    return _format(span) if span.get_span_context().is_valid else None


def traceparent_for(key: str) -> str | None:
    """What work for `key` continues, to store with work deferred through a table (`resume` picks it up):
    inside a batch, the traceparent its events with that key get; outside, the current span's."""
    spans = otel_context.get_value(_BATCH)
    if spans is not None:
        return spans.by_key.get(key, spans.fallback)
    return current_traceparent()


# ------------------------------------------------------------------ a batch: spans and what it stamps
class Spans:
    """A batch's spans, and per key the traceparent its outgoing records continue.

    A context manager: inside, the batch's span is current; on exit every span ends
    (with the error, if the block raised).
    """

    __slots__ = ("by_key", "fallback", "_spans", "_span_of", "_batch", "_token")

    def __init__(self, by_key: dict[str, str], fallback: str | None, spans: list[Span] = (),
                 span_of: dict[str, Span] | None = None, batch: Span | None = None) -> None:
        self.by_key = by_key
        self.fallback = fallback
        self._spans = spans
        self._span_of = span_of
        self._batch = batch
        self._token = None

    def __enter__(self) -> "Spans":
        if self._batch is not None:
            self._token = otel_context.attach(otel_context.set_value(_BATCH, self,
                                                                     trace.set_span_in_context(self._batch)))
        elif self.by_key:  # off, passing traceparents on
            self._token = otel_context.attach(otel_context.set_value(_BATCH, self))
        return self

    def __exit__(self, kind, error, tb) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
        for span in self._spans:
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.end()
        if self._batch is not None and self._batch not in self._spans:
            self._batch.end()

    def context(self, key: str) -> contextvars.Context | None:
        """A context in which `key`'s span is current, for a task doing that key's work (None when off)."""
        span = self._span_of.get(key) if self._span_of else None
        if span is None:
            return None
        task_context = contextvars.copy_context()
        task_context.run(otel_context.attach, trace.set_span_in_context(span))
        return task_context


def _keys(item: "Inbound") -> Iterable[str]:
    """The keys the outgoing records caused by `item` may have: its own, its refund's, its dead letter's."""
    record, event = item.record, item.event
    if record.key is not None:
        yield record.key.decode(errors="replace")
    yield f"{record.topic}/{record.partition}/{record.offset}"  # the key of its dead letter (shared/runtime/stage.py)
    data = event.get_data() if event is not None else None
    if isinstance(data, dict):
        if isinstance(refund_id := data.get("refund_id"), str):
            yield refund_id
        elif record.topic == REQUESTED and isinstance(request_id := data.get("request_id"), str):
            yield refund_id_for(event.get_source(), request_id)  # intake's outcome is keyed by the refund


def consume(inbound: Sequence["Inbound"]) -> Spans:
    """One CONSUMER span per inbound record, its parent the event's traceparent (off: just those)."""
    if _tracer is None:
        by_key = {}
        for item in inbound:
            if traceparent := traceparent_of(item.event):
                by_key.update(dict.fromkeys(_keys(item), traceparent))
        fallback = traceparent_of(inbound[0].event) if len(inbound) == 1 else None
        return Spans(by_key, fallback)
    spans, by_key, span_of = [], {}, {}
    for item in inbound:
        record, event = item.record, item.event
        attributes = {"messaging.system": "kafka", "messaging.operation.type": "process",
                      "messaging.operation.name": "process", "messaging.destination.name": record.topic,
                      "messaging.destination.partition.id": str(record.partition),
                      "messaging.kafka.offset": record.offset}
        if record.key is not None:
            attributes["messaging.kafka.message.key"] = record.key.decode(errors="replace")
        if event is not None:
            attributes.update({"messaging.message.id": event.get_id(), "cloudevents.event_id": event.get_id(),
                               "cloudevents.event_source": event.get_source(),
                               "cloudevents.event_type": event.get_type()})
        span = _tracer.start_span(f"process {record.topic}", kind=SpanKind.CONSUMER, attributes=attributes,
                                  context=_parent(traceparent_of(event)))
        spans.append(span)
        keys = dict.fromkeys(_keys(item), span)
        span_of.update(keys)
        by_key.update(dict.fromkeys(keys, _format(span)))
    return _batch_of(spans, by_key, span_of, "process batch", SpanKind.CONSUMER)


def resume(carried: Mapping[str, str | None], name: str) -> Spans:
    """For work deferred through a table (approval's verifier, payout's executor): per key, one span whose
    parent is the traceparent stored with that key's row (off: those traceparents, passed on unchanged)."""
    if _tracer is None:
        by_key = {key: traceparent for key, raw in carried.items() if (traceparent := valid(raw))}
        return Spans(by_key, next(iter(by_key.values())) if len(carried) == 1 and by_key else None)
    spans, by_key, span_of = [], {}, {}
    for key, raw in carried.items():
        span = _tracer.start_span(name, kind=SpanKind.INTERNAL, attributes={"refund.id": key},
                                  context=_parent(valid(raw)))
        spans.append(span)
        span_of[key] = span
        by_key[key] = _format(span)
    return _batch_of(spans, by_key, span_of, f"{name} batch", SpanKind.INTERNAL)


def _parent(traceparent: str | None) -> otel_context.Context:
    """The context a span continuing `traceparent` starts in; none (a new trace) without one, whatever is current."""
    return _propagator.extract({"traceparent": traceparent}) if traceparent else otel_context.Context()


def _batch_of(spans: list[Span], by_key: dict[str, str], span_of: dict[str, Span], name: str,
              kind: SpanKind) -> Spans:
    if not spans:
        return Spans({}, None)
    if len(spans) == 1:
        batch = spans[0]
    else:
        # Several events (often of several traces) share one transaction: its span links to each.
        batch = _tracer.start_span(name, kind=kind, context=otel_context.Context(),
                                   links=[Link(span.get_span_context()) for span in spans],
                                   attributes={"messaging.batch.message_count": len(spans)})
    return Spans(by_key, _format(batch), spans, span_of, batch)


def stamp(outgoing: Sequence["Outgoing"], spans: Spans) -> list["Outgoing"]:
    """`outgoing`, each record that has no traceparent given its inbound event's (by key), else the batch's."""
    by_key, fallback = spans.by_key, spans.fallback
    if not by_key and fallback is None:
        return list(outgoing)
    stamped = []
    for record in outgoing:
        traceparent = None if record.traceparent else by_key.get(record.key, fallback)
        stamped.append(record.with_traceparent(traceparent) if traceparent else record)
    return stamped


# encode() (the contract's) asks the runtime for the current span's traceparent through this hook.
envelope.current_traceparent = current_traceparent
