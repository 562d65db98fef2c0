"""CloudEvents 1.0 envelope on Kafka, through the CloudEvents SDK.

Out: structured mode JSON (`content-type: application/cloudevents+json`).
In: structured or binary mode (`ce_*` headers), detected per message.
Trace context rides as the distributed-tracing extension `traceparent` (shared/runtime/tracing.py).
"""

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid6
from cloudevents.core.base import BaseCloudEvent, EventFactory
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import CloudEventValidationError
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse
from pydantic import BaseModel

from shared.contract.events import EVENT_TYPES, TYPE_OF

SPEC_VERSION = "1.0"
# The Kafka `content-type` header of a structured-mode record (the SDK's JSON format sets it).
STRUCTURED_CONTENT_TYPE = JSONFormat.CONTENT_TYPE
# The `datacontenttype` of every event: `data` is JSON (in binary mode, the `content-type` header).
DATA_CONTENT_TYPE = "application/json"


class OrjsonFormat(JSONFormat):
    """The SDK's JSON format, parsing and rendering with orjson (make bench: the SDK's standard-library
    JSON and dateutil were a sixth of notify's CPU). The events it builds are the SDK's own, validated
    by the SDK's constructor. Whatever orjson would read or write otherwise than the standard library
    -- an integer beyond 64 bits (orjson reads it as a float), NaN or infinity (which it refuses to read
    and writes as null) -- and whatever is not the common case (not CloudEvents 1.0, `data_base64`) is
    read and written by the SDK's own code."""

    def read(self, event_factory: EventFactory | None, data: str | bytes) -> BaseCloudEvent:
        raw = data.encode() if isinstance(data, str) else data
        try:
            attributes = orjson.loads(raw)
        except orjson.JSONDecodeError:
            attributes = None
        if (not isinstance(attributes, dict) or _holds_huge_float(attributes)
                or attributes.get("specversion") != SPEC_VERSION
                or "data_base64" in attributes or not isinstance(attributes.get("time", ""), str)):
            return super().read(event_factory, data)
        if "time" in attributes:
            attributes["time"] = _instant(attributes["time"])
        event_data = attributes.pop("data", None)
        return (event_factory or CloudEvent)(attributes, event_data)

    def write(self, event: BaseCloudEvent) -> bytes:
        event_data = event.get_data()
        envelope: dict[str, Any] = dict(event.get_attributes())
        if event_data is not None:
            if (not isinstance(event_data, dict) or not _renders_alike(event_data)
                    or envelope.get("datacontenttype", DATA_CONTENT_TYPE) != DATA_CONTENT_TYPE):
                return super().write(event)
            envelope["data"] = event_data
        try:
            return orjson.dumps(envelope, option=orjson.OPT_UTC_Z)
        except TypeError:  # a type orjson does not render
            return super().write(event)


_INT64 = range(-(2**63), 2**64)


def _holds_huge_float(value: object) -> bool:
    """Whether orjson read a number as a float of magnitude 2**63 or more: an integer beyond 64 bits
    (which the standard library reads exactly) or a float that large. Either way the SDK reads it again.
    A walk of the parsed event (orjson's own dicts and lists): 2.5-5 us for the stages' events, where a
    regex over their bytes for 20-digit runs took 9-15 us, half of a decode."""
    todo = [value]
    while todo:
        item = todo.pop()
        if type(item) is dict:
            todo.extend(item.values())
        elif type(item) is list:
            todo.extend(item)
        elif type(item) is float and not -_HUGE < item < _HUGE:
            return True
    return False


_HUGE = float(2**63)


def _renders_alike(value: object) -> bool:
    """Whether orjson renders `value` as the standard library does: no NaN or infinity (orjson: null), no
    integer beyond 64 bits (orjson: an error)."""
    if isinstance(value, dict):
        return all(_renders_alike(item) for item in value.values())
    if isinstance(value, list):
        return all(_renders_alike(item) for item in value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return value in _INT64
    return True


def _instant(text: str) -> datetime:
    """An RFC 3339 time as the SDK reads it (dateutil), the standard library first (much cheaper)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return isoparse(text)


FORMAT = OrjsonFormat()


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32


def valid_traceparent(traceparent: object) -> str | None:
    """`traceparent` if it is a W3C traceparent (version-format-valid, non-zero trace id), else None."""
    if isinstance(traceparent, str) and _TRACEPARENT.fullmatch(traceparent) and traceparent[3:35] != _ZERO_TRACE:
        return traceparent
    return None


def _no_current_span() -> str | None:
    return None


# The traceparent `encode()` gives an event by default: the current span's, once the runtime's tracing
# (shared/runtime/tracing.py) installs itself here; none without it.
current_traceparent: Callable[[], str | None] = _no_current_span


class UnreadableMessage(Exception):
    """The bytes are not a CloudEvent at all (not JSON, not an object): dead-letter them."""


class InvalidEnvelope(Exception):
    """JSON, but its CloudEvents attributes break the spec: reject, naming the problems."""

    def __init__(self, message: str, raw: dict | None):
        super().__init__(message)
        self.raw = raw


@dataclass(frozen=True)
class Outgoing:
    """One Kafka record ready to publish."""

    topic: str
    key: str | None
    value: bytes
    headers: dict[str, bytes]
    event_id: str
    # The `traceparent` in `value`, if encode() put one there; None also for a record rebuilt from stored
    # bytes, which may carry an older one (`with_traceparent` replaces it).
    traceparent: str | None = None

    def with_traceparent(self, traceparent: str) -> "Outgoing":
        """The same record continuing the trace `traceparent`: its structured value re-rendered."""
        if valid_traceparent(traceparent) and self.value.startswith(b'{"') and b'"traceparent"' not in self.value:
            # The common case, without parsing: a JSON object with no such member gets it first (a valid
            # traceparent is hex and dashes: nothing to escape).
            value = b'{"traceparent":"' + traceparent.encode() + b'",' + self.value[1:]
            return Outgoing(self.topic, self.key, value, self.headers, self.event_id, traceparent)
        # It has one (an older trace, on a stored event published again): replace it. The standard library,
        # not orjson, so that no integer of the data is read as a float.
        envelope = json.loads(self.value)
        envelope["traceparent"] = traceparent
        value = json.dumps(envelope).encode()
        return Outgoing(self.topic, self.key, value, self.headers, self.event_id, traceparent)


def new_event_id() -> str:
    """A time-ordered UUID (RFC 9562 version 7): consumers' inboxes key on (source, event_id), and ids that
    grow with time insert at the index's right edge, where random ones touch (and, after a checkpoint, write
    whole into the WAL) a different page each time."""
    return str(uuid6.uuid7())


def encode(payload: BaseModel, *, source: str, key: str | None, event_id: str | None = None,
           traceparent: str | None = None) -> Outgoing:
    """Wrap a contract payload in a structured-mode CloudEvent bound for its topic.

    `traceparent` defaults to the current span's (none inside a consumed batch: the runtime stamps those).
    """
    event_type = TYPE_OF[type(payload)]
    topic = EVENT_TYPES[event_type][1]
    event_id = event_id or new_event_id()
    attributes = {
        "id": event_id,
        "source": source,
        "type": event_type,
        "specversion": SPEC_VERSION,
        "time": datetime.now(UTC),
        "datacontenttype": DATA_CONTENT_TYPE,
    }
    if traceparent := valid_traceparent(traceparent) or current_traceparent():
        attributes["traceparent"] = traceparent
    event = CloudEvent(attributes=attributes, data=payload.model_dump(mode="json"))
    record = ce_kafka.to_structured_event(event, FORMAT)
    return Outgoing(topic=topic, key=key, value=record.value, headers=dict(record.headers), event_id=event_id,
                    traceparent=traceparent)


def decode(value: bytes | None, headers: list[tuple[str, bytes]] | tuple) -> CloudEvent:
    """Read a Kafka record as a CloudEvent, in either content mode."""
    message = ce_kafka.KafkaMessage(headers=dict(headers or ()), key=None, value=value or b"")
    try:
        return ce_kafka.from_kafka_event(message, FORMAT)
    except CloudEventValidationError as error:
        raise InvalidEnvelope(str(error), _json_object(value)) from error
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        # The SDK raises these for bytes that are not JSON or not an object.
        raw = _json_object(value)
        if raw is None:
            raise UnreadableMessage(f"not a CloudEvent: {error}") from error
        raise InvalidEnvelope(f"malformed CloudEvent: {error}", raw) from error


def _json_object(value: bytes | None) -> dict | None:
    import orjson

    try:
        parsed = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None
