import time
import uuid

import orjson
import pytest
from cloudevents.core.formats.json import JSONFormat

from shared.contract.envelope import InvalidEnvelope, OrjsonFormat, UnreadableMessage, decode, encode
from shared.contract.events import RefundStatus, Status
from shared.contract.ids import refund_id_for
from shared.contract import topics


def test_refund_id_is_deterministic_per_source_and_request():
    assert refund_id_for("shop-eu", "r-1") == refund_id_for("shop-eu", "r-1")
    assert refund_id_for("shop-eu", "r-1") != refund_id_for("shop-us", "r-1")
    assert refund_id_for("ab", "c") != refund_id_for("a", "bc")
    assert refund_id_for("shop-eu", "r-1").startswith("rf_")


def _status() -> RefundStatus:
    return RefundStatus(refund_id="rf_1", request_id="r", source="s", order_id="o", status=Status.ACCEPTED,
                        amount={"value": 100, "currency": "JPY"}, updated_at="2026-01-01T00:00:00Z")


def test_encode_writes_structured_cloudevent_to_the_type_topic():
    out = encode(_status(), source="refund-pipeline/notify", key="rf_1")
    assert out.topic == topics.STATUS
    assert out.headers["content-type"] == b"application/cloudevents+json"
    body = orjson.loads(out.value)
    assert body["specversion"] == "1.0"
    assert body["type"] == "refund.status.v1"
    assert body["source"] == "refund-pipeline/notify"
    assert body["data"]["amount"] == {"value": 100, "currency": "JPY"}
    event = decode(out.value, list(out.headers.items()))
    assert event.get_id() == out.event_id


def test_encoded_event_ids_are_version_7_uuids_that_grow_with_time():
    """Inboxes key on (source, event_id): ids from one producer must sort in the order they were made."""
    ids = [encode(_status(), source="refund-pipeline/notify", key="rf_1").event_id for _ in range(50)]
    parsed = [uuid.UUID(i) for i in ids]
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert len(set(ids)) == 50
    # The first 48 bits are the Unix time in milliseconds: never decreasing, and close to now.
    millis = [u.int >> 80 for u in parsed]
    assert millis == sorted(millis)
    assert abs(millis[-1] - time.time() * 1000) < 60_000
    # As text (the inbox's column), they sort in time order too.
    assert [uuid.UUID(i).int >> 80 for i in sorted(ids)] == millis


def test_decode_accepts_binary_mode():
    headers = [("ce_id", b"e1"), ("ce_source", b"shop"), ("ce_type", b"refund.requested.v1"),
               ("ce_specversion", b"1.0"), ("content-type", b"application/json")]
    event = decode(b'{"request_id": "r1"}', headers)
    assert (event.get_id(), event.get_source(), event.get_data()) == ("e1", "shop", {"request_id": "r1"})


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"not json", b"[1, 2]", b"", b"42"])
def test_bytes_that_are_not_a_json_object_are_unreadable(raw):
    with pytest.raises(UnreadableMessage):
        decode(raw, [])


def test_json_object_without_cloudevent_attributes_is_an_invalid_envelope():
    with pytest.raises(InvalidEnvelope) as error:
        decode(b'{"source": "shop", "data": {"request_id": "r1"}}', [])
    assert error.value.raw["data"]["request_id"] == "r1"


SDK_FORMAT = JSONFormat()
_ENVELOPE = {"id": "e-1", "source": "shop-eu", "type": "refund.requested.v1", "specversion": "1.0",
             "datacontenttype": "application/json", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}


@pytest.mark.parametrize("raw", [
    orjson.dumps({**_ENVELOPE, "time": "2026-12-03T05:00:00Z", "data": {"amount": {"value": 2500, "currency": "EUR"},
                                                                       "note": "café ☕", "items": [1, 2.5, None]}}),
    orjson.dumps({**_ENVELOPE, "time": "2026-12-03T05:00:00.123456+01:00"}),  # no data, another offset
    orjson.dumps({**_ENVELOPE, "time": "2026-12-03T05:00:00.123456789Z", "data": {}}),  # nanoseconds
    orjson.dumps({**_ENVELOPE}),  # no time
    # What orjson refuses, as the SDK reads it: an integer beyond 64 bits, NaN.
    b'{"id":"e-2","source":"s","type":"t","specversion":"1.0","data":{"value":123456789012345678901234567890}}',
    b'{"id":"e-3","source":"s","type":"t","specversion":"1.0","data":{"value":NaN}}',
    b'{"id":"e-4","source":"s","type":"t","specversion":"1.0","data":{"v":[-9223372036854775809]}}',  # below int64
    # Read exactly by orjson too: the largest uint64, a float that large, digits in a string.
    b'{"id":"e-5","source":"s","type":"t","specversion":"1.0","data":{"v":18446744073709551615,"w":1e19}}',
    b'{"id":"e-6","source":"s","type":"t","specversion":"1.0","data":{"ref":"1234567890123456789012345"}}',
    orjson.dumps({**_ENVELOPE, "data_base64": "aGVsbG8="}),  # binary data
    orjson.dumps({**_ENVELOPE, "specversion": "0.3", "data": {"a": 1}}),
])
def test_the_orjson_format_reads_and_writes_what_the_sdks_json_format_does(raw):
    ours, sdks = OrjsonFormat().read(None, raw), SDK_FORMAT.read(None, raw)
    if b'"time"' not in raw:  # the SDK's constructor stamps its own now: one stamp for both
        ours = type(ours)({**ours.get_attributes(), "time": sdks.get_attributes()["time"]}, ours.get_data())
    assert type(ours) is type(sdks)
    assert ours.get_attributes() == sdks.get_attributes()
    written, sdk_written = OrjsonFormat().write(ours), SDK_FORMAT.write(sdks)
    if b"NaN" in raw:  # not JSON orjson reads or writes: both are the SDK's own
        assert str(ours.get_data()) == str(sdks.get_data()) and written == sdk_written
    else:
        assert ours.get_data() == sdks.get_data()
        assert orjson.loads(written) == orjson.loads(sdk_written)


@pytest.mark.parametrize("raw", [
    b'{"id":"e-1","source":"s","type":"t","specversion":"1.0","time":5}',  # time not a string
    b'{"id":"e-1","source":"s","type":"t","specversion":"1.0","time":"yesterday"}',
    b'{"id":"e-1","type":"t","specversion":"1.0"}',  # no source
    b'["not", "an", "object"]',
])
def test_the_orjson_format_refuses_what_the_sdks_json_format_refuses(raw):
    with pytest.raises(Exception) as sdks:
        SDK_FORMAT.read(None, raw)
    with pytest.raises(type(sdks.value)):
        OrjsonFormat().read(None, raw)


def test_a_written_time_is_rfc_3339_in_utc_with_z_as_the_sdk_writes_it():
    event = decode(encode(_status(), source="s", key="k").value, [])
    body = orjson.loads(OrjsonFormat().write(event))
    assert body["time"].endswith("Z") and body["time"] == orjson.loads(SDK_FORMAT.write(event))["time"]
