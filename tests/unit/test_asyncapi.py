"""The AsyncAPI document (shared/runtime/asyncapi.py): checked in as generated, valid AsyncAPI 3.0.0, complete,
true to what the services subscribe to, and describing the records the real encoder writes.

The official AsyncAPI 3.0.0 JSON schema is vendored from the npm package `@asyncapi/specs`
(tests/deploy/vendor_schemas.py says how).
"""

import base64
import copy
import importlib
import json
from pathlib import Path

import jsonschema
import pytest
from aiokafka import ConsumerRecord
from cloudevents.core.bindings import kafka as ce_kafka
from fastapi import FastAPI
from fastapi.testclient import TestClient
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from shared.contract import topics
from shared.runtime import asyncapi
from shared.contract.envelope import Outgoing, decode, encode
from shared.contract.events import EVENT_TYPES
from shared.runtime.kafka_auth import SERVICE_READS, SERVICE_SOURCES
from shared.runtime.stage import dead_letter

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "docs" / "asyncapi.json"
SCHEMA = ROOT / "tests" / "deploy" / "schemas" / "asyncapi-3.0.0.json"
STAGES = tuple(SERVICE_READS)

NOW = "2026-12-01T10:00:00Z"
EUR = {"value": 2500, "currency": "EUR"}
# One value for every field any event needs; each model takes its own (unknown fields are ignored).
SAMPLE = {
    "refund_id": "rf_0123456789abcdef0123456789abcdef", "request_id": "req-1001", "source": "shop-eu",
    "order_id": "ord-1", "amount": EUR, "channel": "card", "region": "DE", "reason_codes": ["auto-approve"],
    "payment": {"id": "pi_1", "gateway": "sim", "channel": "card", "captured": {"value": 5000, "currency": "EUR"}},
    "customer": {"id": "cus_1", "locale": "de-DE", "contact_sealed": "sealed"}, "reason": "damaged",
    "requested_at": NOW, "accepted_at": NOW, "deadlines": {"approval": NOW}, "policy_version": "2026-11",
    "approved_at": NOW, "denied_at": NOW, "held_at": NOW, "due_at": NOW, "review_requested_at": NOW,
    "waiting_since": NOW, "escalated_at": NOW, "gateway": "sim", "payout_id": "po_1", "submitted_at": NOW,
    "eta": NOW, "gateway_ref": "re_1", "paid_at": NOW, "failure_reason": "declined", "failed_at": NOW,
    "settled_amount": EUR, "reconciled_at": NOW, "category": "amount_mismatch", "detected_at": NOW,
    "status": "succeeded", "updated_at": NOW, "sequence": 7, "rejected_at": NOW,
    "errors": [{"field": "amount", "code": "not_positive", "message": "must be above 0"}],
    "kind": "review", "exit": "reroute", "reopened_by": "u-senior", "note": "customer called", "expires_at": NOW,
    "reopened_at": NOW, "attempt": 2, "requested_by": "u-finance", "reinstated_at": NOW,
    "refused_at": NOW, "redriven_at": NOW, "destination_sealed": "sealed", "summary": "DE89 **** 3000",
    "provided_at": NOW,
}


def source_of(topic: str) -> str:
    trusted = topics.TRUSTED_SOURCES.get(topic)
    return min(trusted) if trusted else "shop-eu"


def key_of(topic: str, data: dict) -> str:
    return next(data[field] for field in topics.RECORD_KEY_FIELDS[topic] if data.get(field))


def encoded(event_type: str) -> Outgoing:
    """A record of `event_type` as the pipeline writes it: the real payload model and encoder."""
    model, topic = EVENT_TYPES[event_type]
    if topic == topics.DLQ:
        record = ConsumerRecord(topics.PAID, 3, 42, 0, 0, b"rf_1", b"\xffnot json", None, 0, 0,
                                [("ce_id", b"1")])
        return dead_letter(record, "not a CloudEvent", source=SERVICE_SOURCES["reconcile"])
    payload = model.model_validate(SAMPLE)
    return encode(payload, source=source_of(topic), key=key_of(topic, payload.model_dump()))


@pytest.fixture(scope="module")
def document() -> dict:
    return asyncapi.document()


def validator(document: dict, pointer: str) -> jsonschema.Draft7Validator:
    """Validates against the schema at `pointer` in `document`, resolving its `#/components/...` refs."""
    registry = Registry().with_resource("urn:asyncapi", Resource.from_contents(document, DRAFT7))
    return jsonschema.Draft7Validator({"$ref": f"urn:asyncapi#{pointer}"}, registry=registry)


def assert_valid(document: dict, pointer: str, instance: object) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in validator(document, pointer).iter_errors(instance)]
    assert not errors, (pointer, errors)


def test_the_checked_in_document_is_the_generated_one():
    assert CHECKED_IN.read_text() == asyncapi.render(), (
        "docs/asyncapi.json is out of date; regenerate it: .venv/bin/python -m shared.runtime.asyncapi > docs/asyncapi.json")


@pytest.mark.parametrize("view", [None, *asyncapi.VIEWS])
def test_every_view_is_valid_asyncapi_3_and_every_reference_resolves(view):
    doc = asyncapi.document(view)
    schema = json.loads(SCHEMA.read_text())
    errors = [f"{e.json_path}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    assert not errors
    assert doc["asyncapi"] == "3.0.0"
    for ref in asyncapi._refs_in(doc):
        node = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]  # a KeyError names a dangling reference
    for name, operation in doc["operations"].items():
        channel = operation["channel"]["$ref"]
        assert all(m["$ref"].startswith(channel + "/messages/") for m in operation["messages"]), name


def test_every_topic_and_event_type_is_in_the_document(document):
    assert set(document["channels"]) == {spec.name for spec in topics.TOPICS}
    for event_type, (model, topic) in EVENT_TYPES.items():
        message = document["components"]["messages"][event_type]
        assert document["channels"][topic]["messages"][event_type] == {"$ref": f"#/components/messages/{event_type}"}
        data = message["payload"]["allOf"][1]["properties"]["data"]
        assert data == {"$ref": f"#/components/schemas/{model.__name__}"}
    bindings = document["channels"][topics.STATUS]["bindings"]["kafka"]
    assert bindings["topicConfiguration"]["cleanup.policy"] == ["compact"]


def test_the_payload_schemas_are_json_schema_draft_7_as_asyncapi_3_reads_them(document):
    text = json.dumps(document["components"]["schemas"])
    for keyword in ("$defs", "prefixItems", "unevaluatedProperties", "dependentRequired", "$dynamicRef"):
        assert f'"{keyword}"' not in text


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_a_record_from_the_real_encoder_matches_its_message(document, event_type):
    record = encoded(event_type)
    assert record.topic == EVENT_TYPES[event_type][1]
    message = f"/components/messages/{event_type}"
    assert_valid(document, message + "/payload", json.loads(record.value))
    assert_valid(document, message + "/headers", {k: v.decode() for k, v in record.headers.items()})
    assert_valid(document, message + "/bindings/kafka/key", record.key)
    assert record.headers["content-type"].decode() == document["components"]["messages"][event_type]["contentType"]


@pytest.mark.parametrize("event_type", [t for t, (_, topic) in EVENT_TYPES.items() if topic in
                                        {t for reads in SERVICE_READS.values() for t in reads}])
def test_the_same_event_in_binary_mode_matches_its_binary_message(document, event_type):
    binary = ce_kafka.to_binary_event(decode(encoded(event_type).value, ()))
    message = f"/components/messages/{event_type}{asyncapi.BINARY}"
    assert_valid(document, message + "/headers", {k: v.decode() for k, v in binary.headers.items()})
    assert_valid(document, message + "/payload", json.loads(binary.value))


def test_a_record_that_breaks_the_contract_does_not_match(document):
    value = json.loads(encoded("refund.paid.v1").value)
    broken = copy.deepcopy(value)
    broken["data"]["amount"]["value"] = "25.00"
    assert list(validator(document, "/components/messages/refund.paid.v1/payload").iter_errors(broken))
    forged = {**value, "source": "shop-eu"}
    assert list(validator(document, "/components/messages/refund.paid.v1/payload").iter_errors(forged))
    wrong_type = {**value, "type": "refund.reconciled.v1"}
    assert list(validator(document, "/components/messages/refund.paid.v1/payload").iter_errors(wrong_type))


def test_a_dead_letter_is_keyed_by_where_its_record_was(document):
    record = encoded("refund.dead-lettered.v1")
    letter = json.loads(record.value)["data"]
    assert record.key == topics.DLQ_KEY.format(**letter)
    assert base64.b64decode(letter["raw_base64"]) == b"\xffnot json"


@pytest.mark.parametrize("service", STAGES)
def test_each_stage_receives_what_its_main_subscribes_to(document, service):
    main = importlib.import_module(f"services.{service}.main")
    subscriber = main.consumer
    view = asyncapi.document(service)
    receives = {op["channel"]["$ref"].rsplit("/", 1)[1]: op for op in view["operations"].values()
                if op["action"] == "receive"}
    assert set(receives) == set(subscriber.topic_names)
    assert {op["bindings"]["kafka"]["groupId"]["enum"][0] for op in receives.values()} == {subscriber.group_id}
    assert {op for op in view["operations"]} <= set(document["operations"])
    # The service's real app serves this view (no lifespan: nothing connects).
    assert TestClient(main.app).get("/asyncapi.json").json() == view


def test_a_platform_sends_requests_and_receives_statuses():
    view = asyncapi.document(asyncapi.PLATFORM)
    actions = {(op["action"], op["channel"]["$ref"]) for op in view["operations"].values()}
    assert actions == {("send", f"#/channels/{topics.REQUESTED}"), ("receive", f"#/channels/{topics.STATUS}")}
    assert set(view["channels"]) == {topics.REQUESTED, topics.STATUS}


def test_the_router_serves_a_view_or_the_whole_document():
    app = FastAPI()
    app.include_router(asyncapi.router("approval"))
    body = TestClient(app).get("/asyncapi.json").json()
    assert body == asyncapi.document("approval")
    assert {op.split(".", 1)[0] for op in body["operations"]} == {"approval"}
    whole = FastAPI()
    whole.include_router(asyncapi.router("refund-service"))
    assert TestClient(whole).get("/asyncapi.json").json() == asyncapi.document()


def test_an_unknown_view_is_an_error():
    with pytest.raises(ValueError, match="no AsyncAPI view"):
        asyncapi.document("billing")
