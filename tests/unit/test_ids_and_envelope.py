import orjson
import pytest

from shared.contract.envelope import InvalidEnvelope, UnreadableMessage, decode, encode
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
