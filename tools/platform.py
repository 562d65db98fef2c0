"""What a platform does with the pipeline: publish refund requests, follow `refunds.status`.

Used by the demo and the end-to-end tests; it only touches the public contract. Every client
authenticates as given (`auth`), by default as the platform `eval "$(python -m devstack env)"` exports
(KAFKA_SASL_USERNAME/PASSWORD; nothing exported = PLAINTEXT): a platform may write only
refunds.requested and read only refunds.status.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.contract import topics
from shared.contract.envelope import new_event_id
from shared.runtime.kafka_auth import KafkaAuth
from shared.contract.lifecycle import TERMINAL_STATUSES


def requested_record(source: str, data: object, *, binary: bool = False,
                     event_id: str | None = None) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A `refund.requested.v1` CloudEvent as Kafka value and headers, in either content mode."""
    attributes = {"id": event_id or new_event_id(), "source": source, "type": "refund.requested.v1",
                  "specversion": "1.0", "time": datetime.now(UTC).isoformat()}
    if binary:
        headers = [(f"ce_{k}", str(v).encode()) for k, v in attributes.items()]
        return orjson.dumps(data), headers + [("content-type", b"application/json")]
    envelope = {**attributes, "datacontenttype": "application/json", "data": data}
    return orjson.dumps(envelope), [("content-type", b"application/cloudevents+json")]


def _options(auth: KafkaAuth | None) -> dict[str, object]:
    return (auth or KafkaAuth.from_env()).client_options()


async def partitions_of(bootstrap: str, topic: str, auth: KafkaAuth | None = None) -> list[TopicPartition]:
    """The topic's partitions, from the cluster's metadata."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **_options(auth))
    await producer.start()
    try:
        return [TopicPartition(topic, p) for p in sorted(await producer.partitions_for(topic))]
    finally:
        await producer.stop()


async def consumer_at_end(bootstrap: str, *topic_names: str, auth: KafkaAuth | None = None) -> AIOKafkaConsumer:
    """A started consumer (no group) on every partition of the topics, positioned at their current end."""
    partitions = [tp for topic in topic_names for tp in await partitions_of(bootstrap, topic, auth)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                **_options(auth))
    await consumer.start()
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:  # resolve the end offsets now, before anything is published
        await consumer.position(tp)
    return consumer


async def start_producer(bootstrap: str, auth: KafkaAuth | None = None) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **_options(auth))
    await producer.start()
    return producer


@dataclass
class StatusFollower:
    """Follows `refunds.status` from its end at start; remembers every refund's latest status.

    As the contract asks of every subscriber, a record whose `sequence` is not above the last one
    applied for its refund is a republished older snapshot and is dropped (`stale` counts them;
    `history` still lists every record received).
    """

    bootstrap: str
    auth: KafkaAuth | None = None
    latest: dict[str, dict] = field(default_factory=dict)
    history: dict[str, list[str]] = field(default_factory=dict)
    terminal_at: dict[str, float] = field(default_factory=dict)
    sequences: dict[str, list[int]] = field(default_factory=dict)
    stale: int = 0
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, from_beginning: bool = False) -> None:
        self._consumer = await consumer_at_end(self.bootstrap, topics.STATUS, auth=self.auth)
        if from_beginning:
            await self._consumer.seek_to_beginning()
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    data = orjson.loads(record.value)["data"]
                    refund_id = data["refund_id"]
                    self.history.setdefault(refund_id, []).append(data["status"])
                    self.sequences.setdefault(refund_id, []).append(data.get("sequence", 0))
                    applied = self.latest.get(refund_id)
                    if applied is not None and data.get("sequence", 0) <= applied.get("sequence", 0):
                        self.stale += applied.get("sequence", 0) > data.get("sequence", 0)
                        continue
                    self.latest[refund_id] = data
                    if data["status"] in TERMINAL_STATUSES:
                        self.terminal_at.setdefault(refund_id, now)
                    self.applied(refund_id, data, now)
            if batches:
                self._changed.set()

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until `condition()` holds or `timeout` seconds pass; return whether it held."""
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.5))
            except TimeoutError:
                pass
        return True

    def applied(self, refund_id: str, data: dict, received_at: float) -> None:
        """Called for every record applied (not dropped as stale), with when it was received; a subclass
        may note more than the latest status (e.g. when each status was first reached)."""

    def status_of(self, refund_id: str) -> str | None:
        data = self.latest.get(refund_id)
        return data["status"] if data else None

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()


class GatewayPayments:
    """The customer's payment at the gateway, made before its refund is asked for: the stand-in for the
    platform's own earlier charge, at the local stack's simulator (docs/gateway-simulator.md "Payments").

    `routes` is the stack's GATEWAY_ROUTES; a payment on a gateway without a route is left alone (it is
    never paid). Making the same payment twice is a no-op; a second request that claims another captured
    amount keeps the first one (the gateway's truth, which payment verification then compares against).
    """

    def __init__(self, routes: dict[str, dict]) -> None:
        self.routes = routes
        self._made: set[tuple[str, str]] = set()
        self._http = httpx.AsyncClient(timeout=10)

    async def ensure(self, request: dict) -> None:
        payment = request.get("payment") if isinstance(request, dict) else None
        if not isinstance(payment, dict) or not isinstance(payment.get("captured"), dict):
            return
        gateway, payment_id = payment.get("gateway"), payment.get("id")
        route = self.routes.get(gateway) if isinstance(gateway, str) else None
        captured = payment["captured"]
        if route is None or not isinstance(payment_id, str) or (gateway, payment_id) in self._made \
                or not isinstance(captured.get("value"), int) or not isinstance(captured.get("currency"), str):
            return
        if route["kind"] == "stripe":
            response = await self._http.post(
                f"{route['base_url']}/v1/payment_intents", headers={"Authorization": f"Bearer {route['api_key']}"},
                data={"id": payment_id, "amount": captured["value"], "currency": captured["currency"].lower(),
                      "confirm": "true"})
        else:
            response = await self._http.post(f"{route['base_url']}/sim/payments", headers={"X-API-Key": route["api_key"]},
                                             json={"pspReference": payment_id, "amount": captured})
        if response.status_code < 500:  # 4xx: made before with other values, or not a payment the gateway takes
            self._made.add((gateway, payment_id))
        else:
            response.raise_for_status()
