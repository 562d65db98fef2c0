"""The Kafka contract as an AsyncAPI 3.0.0 document, derived from the code that is the contract.

Channels are the topics (`topics.TOPICS`: partitions, compaction, retention, the owning source in
`TRUSTED_SOURCES`, the record key); their messages are the event types that travel on each
(`events.EVENT_TYPES`) in the CloudEvents envelope (`envelope`): structured mode, and on every topic a
stage consumes also binary mode (`ce_*` headers), which `envelope.decode` accepts. `data` schemas are
the pydantic models' own, under `components.schemas`. Operations are who sends and receives what: the
ACL table (`kafka_auth.ACCESS`: what each stage subscribes to and is the trusted source of) for the
five stages, `kafka_auth.platform_access` for the platforms.

`document(service)` is one service's view (its operations and what they use); every service serves
its own at `GET /asyncapi.json` (`router`). The whole document is checked in:

    python -m shared.runtime.asyncapi > docs/asyncapi.json
"""

import inspect
import json
import sys
from typing import Any

from cloudevents.core.bindings.kafka import CE_PREFIX
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic.json_schema import models_json_schema

from shared.contract import envelope, lifecycle, topics
from shared.runtime import kafka_auth
from shared.contract.events import EVENT_TYPES, Status

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING = "0.5.0"
PLATFORM = "platform"  # the view of a platform: what it publishes and subscribes to
VIEWS = (*kafka_auth.SERVICE_READS, PLATFORM)
BINARY = "-binary"  # suffix of a binary-mode message's id

SECURITY_TYPES = {"SCRAM-SHA-512": "scramSha512", "SCRAM-SHA-256": "scramSha256", "PLAIN": "plain"}
# W3C Trace Context (https://www.w3.org/TR/trace-context/#traceparent-header).
TRACEPARENT = r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"

# The CloudEvents 1.0 attributes of the contract's events; in binary mode each is a `ce_<name>` header.
ATTRIBUTES: dict[str, dict[str, Any]] = {
    "specversion": {"type": "string", "const": envelope.SPEC_VERSION},
    "id": {"type": "string", "minLength": 1, "description": "Unique per `source`; consumers dedupe on (source, id)."},
    "source": {"type": "string", "minLength": 1, "description": "The producer: a platform's identity, or "
               "`refund-pipeline/<stage>`."},
    "type": {"type": "string", "pattern": r"^refund\.[a-z-]+\.v[0-9]+$"},
    "time": {"type": "string", "format": "date-time", "description": "RFC 3339."},
    "traceparent": {"type": "string", "pattern": TRACEPARENT,
                    "description": "CloudEvents distributed-tracing extension: the W3C trace context."},
    "tracestate": {"type": "string", "description": "CloudEvents distributed-tracing extension."},
}
REQUIRED_ATTRIBUTES = ["specversion", "id", "source", "type"]


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}


def _actors() -> dict[str, kafka_auth.Access]:
    """Every party on the contract and its rights: the five stages, and a platform."""
    stages = {name: kafka_auth.ACCESS[name] for name in kafka_auth.SERVICE_READS}
    return {**stages, PLATFORM: kafka_auth.platform_access(PLATFORM)}


def _sources(topic: str) -> dict[str, Any]:
    """The `source` an event on `topic` may have."""
    if topic in topics.TRUSTED_SOURCES:
        return {"type": "string", "enum": sorted(topics.TRUSTED_SOURCES[topic])}
    if topic == topics.DLQ:  # each stage dead-letters under its own source
        return {"type": "string", "enum": sorted(source for name, source in kafka_auth.SERVICE_SOURCES.items()
                                                 if topic in kafka_auth.ACCESS[name].writes)}
    return {"type": "string", "minLength": 1, "description": "The platform's identity; the broker authenticates "
            "each platform as its own principal."}


def _key(topic: str) -> dict[str, Any]:
    if topic == topics.DLQ:
        return {"type": "string", "description": f"`{topics.DLQ_KEY}` of the dead-lettered record."}
    fields = " or else ".join(f"`data.{field}`" for field in topics.RECORD_KEY_FIELDS[topic])
    return {"type": "string", "description": f"The event's {fields}, so one refund's records stay in order "
            "on one partition."}


def _consumed() -> set[str]:
    return {topic for name, access in _actors().items() if name != PLATFORM for topic in access.reads}


def _status_note(event_type: str) -> str:
    status = lifecycle.STATUS_OF_TYPE.get(event_type)
    if status is None:
        return ""
    note = f"Moves the refund to `{status}` (shared/contract/lifecycle.py)"
    if status is Status.FAILED:
        note += f"; `{Status.REVERSED}` when `failure_reason` starts with `{lifecycle.REVERSAL_REASON}`"
    return note + "."


def _schemas() -> tuple[dict[str, str], dict[str, Any]]:
    """`data` schema ref per event type, and every schema under components.schemas."""
    models = [model for model, _ in EVENT_TYPES.values()]
    refs, defs = models_json_schema([(model, "validation") for model in models],
                                    ref_template="#/components/schemas/{model}")
    schemas = defs["$defs"]
    shared_schemas = {
        "CloudEvent": {
            "type": "object", "required": REQUIRED_ATTRIBUTES,
            "description": f"A CloudEvents {envelope.SPEC_VERSION} event in structured mode (JSON); the "
                           "`data` is the event type's payload. Unknown attributes are ignored.",
            "properties": {**ATTRIBUTES, "datacontenttype": {"type": "string", "const": envelope.DATA_CONTENT_TYPE},
                           "data": {}},
        },
        "StructuredModeHeaders": {
            "type": "object",
            "properties": {"content-type": {"type": "string", "const": envelope.STRUCTURED_CONTENT_TYPE}},
        },
        "BinaryModeHeaders": {
            "type": "object", "required": [CE_PREFIX + name for name in REQUIRED_ATTRIBUTES],
            "description": "CloudEvents binary mode: the attributes as `ce_*` headers, `data` is the record's value. "
                           "Accepted on input; the pipeline sends structured mode.",
            "properties": {**{CE_PREFIX + name: schema for name, schema in ATTRIBUTES.items()},
                           "content-type": {"type": "string", "const": envelope.DATA_CONTENT_TYPE}},
        },
    }
    assert not shared_schemas.keys() & schemas.keys(), "an event model is named like an envelope schema"
    data = {name: refs[(model, "validation")]["$ref"] for name, (model, _) in EVENT_TYPES.items()}
    return data, {**schemas, **shared_schemas}


def _messages(data: dict[str, str]) -> dict[str, dict[str, Any]]:
    consumed = _consumed()
    messages: dict[str, dict[str, Any]] = {}
    for event_type, (model, topic) in EVENT_TYPES.items():
        doc = inspect.cleandoc(model.__doc__ or "")
        description = "\n\n".join(part for part in (doc, _status_note(event_type)) if part)
        common = {"name": event_type, **({"summary": doc.split("\n\n")[0].replace("\n", " ")} if doc else {}),
                  **({"description": description} if description else {}),
                  "bindings": {"kafka": {"key": _key(topic), "bindingVersion": KAFKA_BINDING}}}
        attributes = {"type": {"const": event_type}, "source": _sources(topic)}
        messages[event_type] = {
            **common, "title": model.__name__, "contentType": envelope.STRUCTURED_CONTENT_TYPE,
            "headers": _ref("components", "schemas", "StructuredModeHeaders"),
            "payload": {"type": "object", "allOf": [_ref("components", "schemas", "CloudEvent"), {
                "type": "object", "required": ["data"],
                "properties": {**attributes, "data": {"$ref": data[event_type]}}}]},
        }
        if topic in consumed:
            messages[event_type + BINARY] = {
                **common, "title": f"{model.__name__} (binary mode)", "contentType": envelope.DATA_CONTENT_TYPE,
                "headers": {"type": "object", "allOf": [_ref("components", "schemas", "BinaryModeHeaders"), {
                    "type": "object",
                    "properties": {CE_PREFIX + name: schema for name, schema in attributes.items()}}]},
                "payload": {"$ref": data[event_type]},
            }
    return messages


def _topic_configuration(config: dict[str, str]) -> dict[str, Any]:
    return {name: value.split(",") if name == "cleanup.policy" else int(value) if value.isdigit() else value
            for name, value in config.items()}


def _channels(messages: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    actors = _actors()
    channels = {}
    for spec in topics.TOPICS:
        writers = [name for name, access in actors.items() if spec.name in access.writes]
        readers = [name for name, access in actors.items() if spec.name in access.reads]
        lines = [f"Written by {', '.join(writers)}; read by {', '.join(readers) or 'no stage or platform'}."]
        if spec.name in topics.TRUSTED_SOURCES:
            trusted = ", ".join(f"`{source}`" for source in sorted(topics.TRUSTED_SOURCES[spec.name]))
            lines.append(f"Trusted source: {trusted}; a stage dead-letters an event on it from any other source "
                         "as `untrusted_source`.")
        if spec.name in topics.COMPACTED:
            lines.append("Compacted: the last record per key is the current one.")
        if "retention.ms" in spec.config:
            lines.append(f"Records are kept {int(spec.config['retention.ms']) // 86_400_000} days.")
        binding = {"partitions": spec.partitions,
                   **({"topicConfiguration": _topic_configuration(spec.config)} if spec.config else {}),
                   "bindingVersion": KAFKA_BINDING}
        channels[spec.name] = {
            "address": spec.name, "description": " ".join(lines),
            "messages": {message_id: _ref("components", "messages", message_id)
                         for message_id, message in messages.items() if EVENT_TYPES[message["name"]][1] == spec.name},
            "bindings": {"kafka": binding},
        }
    return channels


def _operations(channels: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    operations = {}
    for actor, access in _actors().items():
        for action, names in (("receive", access.reads), ("send", access.writes)):
            for topic in sorted(names):
                # The stages send structured mode; whatever is consumed may also come in binary mode.
                ids = [message_id for message_id in channels[topic]["messages"]
                       if action == "receive" or actor == PLATFORM or not message_id.endswith(BINARY)]
                operation = {
                    "action": action, "channel": _ref("channels", topic), "title": f"{actor} {action}s {topic}",
                    "messages": [_ref("channels", topic, "messages", message_id) for message_id in ids],
                    "tags": [{"name": actor}],
                }
                if action == "receive":
                    operation["bindings"] = {"kafka": {"groupId": _group(access), "bindingVersion": KAFKA_BINDING}}
                operations[f"{actor}.{action}.{topic}"] = operation
    return operations


def _group(access: kafka_auth.Access) -> dict[str, Any]:
    if access.groups:
        return {"type": "string", "enum": sorted(access.groups)}
    return {"type": "string", "description": "Any consumer group id starting with the platform's principal."}


def _whole() -> dict[str, Any]:
    data, schemas = _schemas()
    messages = _messages(data)
    channels = _channels(messages)
    major = max(int(name.rsplit(".v", 1)[1]) for name in EVENT_TYPES)
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Refund pipeline: Kafka contract",
            "version": f"{major}.0.0",
            "description": "Every refund one tracked ticket through intake, approval, payout, reconcile and notify, "
                           "over Kafka (SPEC.md). Generated from shared/ by `python -m shared.runtime.asyncapi`; each "
                           "service serves its own view at `GET /asyncapi.json`.",
            "tags": [{"name": actor, **({"description": f"CloudEvents source `{kafka_auth.SERVICE_SOURCES[actor]}`"}
                                        if actor in kafka_auth.SERVICE_SOURCES else {})} for actor in _actors()],
        },
        "defaultContentType": envelope.STRUCTURED_CONTENT_TYPE,
        "servers": {"kafka": {
            "host": "{bootstrap}", "protocol": "kafka",
            "description": "Every service and platform is its own principal with ACLs (shared/runtime/kafka_auth.py).",
            "variables": {"bootstrap": {"description": "KAFKA_BOOTSTRAP_SERVERS"}},
            "security": [_ref("components", "securitySchemes", "scram")],
        }},
        "channels": channels,
        "operations": _operations(channels),
        "components": {
            "schemas": schemas, "messages": messages,
            "securitySchemes": {"scram": {
                "type": SECURITY_TYPES[kafka_auth.SCRAM],
                "description": f"SASL {kafka_auth.SCRAM} (SASL_PLAINTEXT on the local stack)."}},
        },
    }


def _refs_in(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs_in(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs_in(value) for value in node))
    return set()


def _view(whole: dict[str, Any], actor: str) -> dict[str, Any]:
    """`actor`'s operations and only the channels and components they reach."""
    operations = {name: op for name, op in whole["operations"].items() if name.split(".", 1)[0] == actor}
    channels = {ref.split("/")[2] for ref in _refs_in(operations)}
    doc = {**whole, "info": {**whole["info"], "title": f"{whole['info']['title']} ({actor})",
                             "tags": [tag for tag in whole["info"]["tags"] if tag["name"] == actor]},
           "channels": {name: body for name, body in whole["channels"].items() if name in channels},
           "operations": operations}
    reached: set[tuple[str, str]] = set()
    todo = _refs_in({key: doc[key] for key in ("servers", "channels", "operations")})
    while todo:
        ref = todo.pop()
        if ref.startswith("#/components/") and tuple(ref.split("/")[2:4]) not in reached:
            kind, name = ref.split("/")[2:4]
            reached.add((kind, name))
            todo |= _refs_in(whole["components"][kind][name])
    doc["components"] = {kind: {name: body for name, body in items.items() if (kind, name) in reached}
                         for kind, items in whole["components"].items()}
    return doc


def document(service: str | None = None) -> dict[str, Any]:
    """The whole contract, or one view of it: a stage's (`intake`, …) or a platform's (`platform`)."""
    if service is not None and service not in VIEWS:
        raise ValueError(f"no AsyncAPI view {service!r}: one of {', '.join(VIEWS)}")
    whole = _whole()
    return whole if service is None else _view(whole, service)


def render(service: str | None = None) -> str:
    """The document as the JSON text that is checked in (docs/asyncapi.json)."""
    return json.dumps(document(service), indent=2, ensure_ascii=False) + "\n"


def router(service: str | None) -> APIRouter:
    """`GET /asyncapi.json`: this service's view, or the whole contract for a process that is no view."""
    body = document(service if service in VIEWS else None)
    routes = APIRouter()

    @routes.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi() -> JSONResponse:
        return JSONResponse(body)

    return routes


if __name__ == "__main__":
    sys.stdout.write(render(sys.argv[1] if len(sys.argv) > 1 else None))
