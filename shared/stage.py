"""How a stage consumes: one Kafka poll = one database transaction, with inbox and outbox.

FastStream's Kafka subscriber is at-most-once by default (ACK_FIRST) and has no
dead-letter queue and no transactions, so every stage runs this loop instead:

1. decode each record; bytes that are not a CloudEvent become a dead letter;
2. in ONE PostgreSQL transaction: claim each event in the stage's `inbox`
   (source, id) -- a redelivered event is skipped -- let the stage decide and
   save, and write whatever it publishes to the stage's `outbox`;
3. after commit, publish the outbox rows; once the broker has acked them they
   are deleted in the next transaction (or by the relay), saving a commit per
   batch. The relay republishes rows a crash left behind, so publishing is
   at-least-once and consumers dedupe by event id;
4. return, and the subscriber (AckPolicy.NACK_ON_ERROR) commits the offsets.

If the batch transaction fails for a reason other than the database being
unreachable, the records are retried one per transaction, and one that still
fails is dead-lettered with its error, so a poison message never blocks its
partition. Unreachable database: the batch is nacked and redelivered.
"""

import asyncio
import base64
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord
from cloudevents.core.v1.event import CloudEvent

from shared import topics, tracing
from shared.envelope import InvalidEnvelope, Outgoing, decode, encode
from shared.events import DeadLetter
from shared.kafka_auth import KafkaAuth
from shared.metrics import MESSAGES_DEAD_LETTERED
from shared.periodic import every
from shared.safe_errors import error_text

log = structlog.get_logger()


@dataclass(frozen=True)
class Inbound:
    """One record off Kafka: its CloudEvent, or why it could not be read."""

    record: ConsumerRecord
    event: CloudEvent | None
    invalid: InvalidEnvelope | None = None


# A stage's decision for one event: save state on `conn`, return what to publish.
Decide = Callable[[asyncpg.Connection, Inbound], Awaitable[list[Outgoing]]]

TRANSIENT_DB_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


def dead_letter(record: ConsumerRecord, error: str, *, source: str) -> Outgoing:
    """The DLQ record for bytes the stage cannot use, with their origin."""
    payload = DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode(errors="replace") if record.key else None,
        raw_base64=base64.b64encode(record.value or b"").decode(),
        headers={k: v.decode(errors="replace") for k, v in (record.headers or ())},
        error=error[:2000],
        dead_lettered_at=datetime.now(UTC),
    )
    return encode(payload, source=source, key=f"{record.topic}/{record.partition}/{record.offset}")


class Stage:
    """The consume loop of one service: inbox, decision, outbox, publish."""

    def __init__(self, *, schema: str, source: str, decide: Decide, redelivered: Decide | None = None,
                 answers_invalid_envelopes_on: frozenset[str] = frozenset(),
                 trusted: Mapping[str, frozenset[str]] | None = None) -> None:
        self.schema = schema
        self.source = source
        self.decide = decide
        # Called instead of `decide` for an event the inbox has seen (most stages: nothing).
        self.redelivered = redelivered
        # Only intake answers a malformed envelope (on refunds.requested) with a rejection; elsewhere it
        # is a dead letter.
        self.answers_invalid_envelopes_on = answers_invalid_envelopes_on
        # Per consumed topic, the sources whose events it acts on (the contract's, unless a test narrows it).
        self.trusted = topics.TRUSTED_SOURCES if trusted is None else trusted
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self.committed = asyncio.Event()
        # Outbox rows the broker has acked, deleted by the next transaction.
        self._published: list[int] = []

    async def start(self, pool: asyncpg.Pool, bootstrap_servers: str, client_id: str, linger_ms: int,
                    auth: KafkaAuth | None = None) -> None:
        # The outbox publishes through a plain idempotent producer: the records are
        # already encoded, so FastStream's per-publish middleware chain is pure overhead.
        self.pool = pool
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, client_id=client_id,
                                         acks="all", enable_idempotence=True, linger_ms=linger_ms,
                                         **(auth or KafkaAuth()).client_options())
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def process(self, records: Sequence[ConsumerRecord]) -> None:
        inbound = [self._read(record) for record in records]
        with tracing.consume(inbound) as spans:  # tracing: a CONSUMER span per event, ended after the batch
            await self._process(inbound, spans)

    async def _process(self, inbound: Sequence[Inbound], spans: tracing.Spans) -> None:
        try:
            pending = await self._in_transaction(inbound, spans)
        except TRANSIENT_DB_ERRORS:
            await asyncio.sleep(1.0)  # back off before the nack redelivers the batch
            raise
        except Exception:
            log.exception("batch_failed_retrying_one_by_one", size=len(inbound))
            pending = await self._one_by_one(inbound, spans)
        self.committed.set()
        await self._publish(pending)

    def _read(self, record: ConsumerRecord) -> Inbound:
        try:
            return Inbound(record, decode(record.value, record.headers))
        except InvalidEnvelope as invalid:
            return Inbound(record, None, invalid)
        except Exception:  # UnreadableMessage, or anything the SDK throws at odd bytes
            return Inbound(record, None)

    async def _in_transaction(self, inbound: Sequence[Inbound], spans: tracing.Spans) -> list[tuple[int, Outgoing]]:
        letters: list[str] = []  # dead-letter reasons, counted only once the transaction has committed
        async with self.pool.acquire() as conn, self._forgetting_published(conn) as forget, conn.transaction():
            await forget()
            fresh = await self._claim(conn, [item.event for item in inbound if item.event is not None])
            outgoing: list[Outgoing] = []
            for item in inbound:
                outgoing += await self._handle(conn, item, fresh, letters)
            outgoing = tracing.stamp(outgoing, spans)  # tracing: each continues its inbound event's trace
            pending = await self._write_outbox(conn, outgoing)
        self._count_dead_letters(letters)
        return pending

    async def _one_by_one(self, inbound: Sequence[Inbound], spans: tracing.Spans) -> list[tuple[int, Outgoing]]:
        ids: list[tuple[int, Outgoing]] = []
        for item in inbound:
            try:
                ids += await self._in_transaction([item], spans)
            except TRANSIENT_DB_ERRORS:
                raise
            except Exception as error:
                log.exception("poison_message", topic=item.record.topic,
                              partition=item.record.partition, offset=item.record.offset)
                # Paths and error types only: a ValidationError's own text quotes the customer's data.
                letter = dead_letter(item.record, error_text(error), source=self.source)
                [letter] = tracing.stamp([letter], spans)  # tracing
                async with self.pool.acquire() as conn, conn.transaction():
                    ids += await self._write_outbox(conn, [letter])
                self._count_dead_letters([type(error).__name__])
        return ids

    def _count_dead_letters(self, reasons: Sequence[str]) -> None:
        for reason in reasons:
            MESSAGES_DEAD_LETTERED.labels(self.schema, reason).inc()

    async def _handle(self, conn: asyncpg.Connection, item: Inbound, fresh: set[tuple[str, str]],
                      letters: list[str]) -> list[Outgoing]:
        if item.event is None and not (item.invalid and item.record.topic in self.answers_invalid_envelopes_on):
            error = str(item.invalid) if item.invalid else "not a CloudEvent (not JSON, or not an object)"
            letters.append("invalid_envelope" if item.invalid else "unreadable")
            return [dead_letter(item.record, error, source=self.source)]
        if item.event is not None and not self._trusted(item):
            letters.append("untrusted_source")
            log.warning("untrusted_source", topic=item.record.topic, source=item.event.get_source(),
                        event_type=item.event.get_type(), offset=item.record.offset)
            return [dead_letter(item.record, f"untrusted_source: {item.record.topic} accepts events only from "
                                f"{', '.join(sorted(self.trusted[item.record.topic]))}", source=self.source)]
        if item.event is not None:
            key = (item.event.get_source(), item.event.get_id())
            if key not in fresh:
                # Redelivered (or twice in this batch): its effects are already saved.
                return await self.redelivered(conn, item) if self.redelivered else []
            fresh.discard(key)
        return await self.decide(conn, item)

    def _trusted(self, item: Inbound) -> bool:
        allowed = self.trusted.get(item.record.topic)
        return allowed is None or item.event.get_source() in allowed

    async def _claim(self, conn: asyncpg.Connection, events: Sequence[CloudEvent]) -> set[tuple[str, str]]:
        """Record the events in the inbox; return those not seen before."""
        if not events:
            return set()
        rows = await conn.fetch(
            f"INSERT INTO {self.schema}.inbox (source, event_id) "
            "SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING RETURNING source, event_id",
            [e.get_source() for e in events], [e.get_id() for e in events])
        return {(row["source"], row["event_id"]) for row in rows}

    async def _write_outbox(self, conn: asyncpg.Connection,
                            outgoing: Sequence[Outgoing]) -> list[tuple[int, Outgoing]]:
        if not outgoing:
            return []
        rows = await conn.fetch(
            f"INSERT INTO {self.schema}.outbox (topic, key, value, headers) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::jsonb[]) RETURNING id",
            [o.topic for o in outgoing], [o.key for o in outgoing], [o.value for o in outgoing],
            [{k: v.decode() for k, v in o.headers.items()} for o in outgoing],
        )
        pending = [(row["id"], item) for row, item in zip(rows, outgoing, strict=True)]
        newest = {(item.topic, item.key): row_id for row_id, item in pending
                  if item.topic in topics.COMPACTED and item.key is not None}
        if newest:
            # On a compacted topic the last record per key is all a late reader gets, so an older
            # snapshot still in the outbox (its publish unconfirmed, or its deletion rolled back) must
            # never be relayed after this one: it goes now. A relay sending it holds its row lock,
            # so this waits until that send is acked, and this row is published after it.
            await conn.execute(
                f"DELETE FROM {self.schema}.outbox o USING unnest($1::text[], $2::text[], $3::bigint[]) "
                "AS n(topic, key, id) WHERE o.topic = n.topic AND o.key = n.key AND o.id < n.id",
                [t for t, _ in newest], [k for _, k in newest], list(newest.values()))
        return pending

    async def _publish(self, pending: Sequence[tuple[int, Outgoing]]) -> None:
        """Publish committed outbox rows and wait for the broker's acks; deletion comes later."""
        if not pending:
            return
        await self._send([item for _, item in pending])
        self._published += [row_id for row_id, _ in pending]

    async def _send(self, outgoing: Sequence[Outgoing]) -> None:
        """Send in order (one producer keeps a partition's order) and wait for every ack."""
        sends = [
            await self.producer.send(item.topic, item.value, key=item.key.encode() if item.key else None,
                                     headers=list(item.headers.items()))
            for item in outgoing
        ]
        await asyncio.gather(*sends)

    @contextlib.asynccontextmanager
    async def _forgetting_published(self, conn: asyncpg.Connection):
        """Yield a step that deletes the acked rows on `conn`; they are remembered again unless the
        block -- the whole transaction the DELETE runs in -- completes, so a rollback leaves none behind."""
        acked, self._published = self._published, []

        async def forget() -> None:
            if acked:
                await conn.execute(f"DELETE FROM {self.schema}.outbox WHERE id = ANY($1::bigint[])", acked)

        try:
            yield forget
        except BaseException:
            self._published = acked + self._published
            raise

    async def publish(self, conn: asyncpg.Connection, outgoing: Sequence[Outgoing]) -> list[tuple[int, Outgoing]]:
        """For work outside the consume loop (sweeps, gateways): outbox rows on `conn`'s transaction."""
        return await self._write_outbox(conn, outgoing)

    async def flush(self, pending: Sequence[tuple[int, Outgoing]]) -> None:
        """Publish what `publish` wrote, once its transaction has committed."""
        await self._publish(pending)

    async def relay_forever(self, interval: float = 2.0, older_than_seconds: float = 10.0) -> None:
        """Republish rows a crash left between commit and publish."""
        await every(interval, lambda: self.relay_once(older_than_seconds), name="outbox_relay")

    async def relay_once(self, older_than_seconds: float) -> None:
        """Publish outbox rows older than `older_than_seconds` and delete them, holding their row locks
        until the broker has acked them (a newer row for the same key waits behind them: see above)."""
        async with self.pool.acquire() as conn:
            async with self._forgetting_published(conn) as forget, conn.transaction():
                await forget()
            async with conn.transaction():
                rows = await conn.fetch(
                    f"SELECT id, topic, key, value, headers FROM {self.schema}.outbox "
                    "WHERE created_at < now() - make_interval(secs => $1) ORDER BY id LIMIT 5000 "
                    "FOR UPDATE SKIP LOCKED", older_than_seconds)
                if not rows:
                    return
                await self._send([Outgoing(topic=r["topic"], key=r["key"], value=r["value"],
                                           headers={k: v.encode() for k, v in r["headers"].items()},
                                           event_id="") for r in rows])
                await conn.execute(f"DELETE FROM {self.schema}.outbox WHERE id = ANY($1::bigint[])",
                                   [r["id"] for r in rows])
        log.warning("outbox_relayed", rows=len(rows))
