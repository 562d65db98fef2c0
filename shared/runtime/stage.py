"""How a stage consumes: one Kafka batch = one database transaction, with inbox and outbox.

FastStream's Kafka subscriber is at-most-once by default (ACK_FIRST) and has no
dead-letter queue and no transactions, so every stage runs this loop instead
(fed by shared/runtime/consume.py):

1. decode each record; bytes that are not a CloudEvent become a dead letter, and so
   does an event from a source its topic does not trust, or (for a handler that asks
   for it) data that breaks its contract model -- each validated once, here;
2. in ONE PostgreSQL transaction: claim each event in the stage's `inbox`
   (source, id) -- a redelivered event goes to `redelivered`, if the stage has one --
   give each handler the batch's events of its types at once (set-based SQL), and
   write whatever they emit to the stage's `outbox`;
3. after commit, send the outbox rows without waiting: the broker's acks arrive while
   the next batch is saved, and acked rows are deleted by the next transaction (or by
   the relay). The relay republishes rows a crash left behind, so publishing is
   at-least-once and consumers dedupe by event id;
4. return, and the consume loop commits the offsets in the background.

If the batch transaction fails for a reason other than the database being
unreachable, the records are retried one per transaction, and one that still
fails is dead-lettered with its error, so a poison message never blocks its
partition. Unreachable database: the loop fetches the batch again.

Each dead letter is also kept in the stage's `dead_letters` table, in the transaction that writes its
DLQ outbox row, so staff can replay it through this same path once the cause is fixed (`replay`), or
discard it (shared/runtime/dead_letters.py); past `DEAD_LETTER_LIMIT_PER_MINUTE` the stage's breaker
opens and its consumer pauses.

Work outside the consume loop (HTTP handlers, sweeps, gateway results) uses the same
unit of work: `async with stage.unit_of_work() as uow: ...; uow.emit(event)` saves and
writes the outbox in one transaction, then sends after commit.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord
from cloudevents.core.v1.event import CloudEvent
from pydantic import ValidationError

from shared.contract import topics
from shared.runtime import tracing
from shared.contract.envelope import InvalidEnvelope, Outgoing, decode
from shared.contract.events import EVENT_TYPES
from shared.runtime import db, dead_letters
from shared.runtime.dead_letters import DEAD_LETTERS, DeadLetterBreaker, Letter
from shared.runtime.kafka_auth import KafkaAuth
from shared.runtime.metrics import MESSAGES_DEAD_LETTERED
from shared.runtime.periodic import every
from shared.runtime.safe_errors import error_text

log = structlog.get_logger()


@dataclass(frozen=True)
class Inbound:
    """One record off Kafka: its CloudEvent, or why it could not be read."""

    record: ConsumerRecord
    event: CloudEvent | None
    invalid: InvalidEnvelope | None = None
    # The event's data validated into its contract model, for a handler that asks for it.
    data: Any = None


# A stage's decision for one event: save state on `conn`, return what to publish.
Decide = Callable[[asyncpg.Connection, Inbound], Awaitable[list[Outgoing]]]
# A stage's decision for a batch's events of some types, in the order they were consumed.
DecideBatch = Callable[[asyncpg.Connection, list[Inbound]], Awaitable[list[Outgoing]]]


@dataclass(frozen=True)
class Handler:
    """What a stage does with the events of the types it is registered for: `decide` gets all of a
    batch's at once. `validated`: the runtime validates each event's data into the type's contract
    model first (`Inbound.data`), and dead-letters one that does not fit, naming the fields."""

    decide: DecideBatch
    validated: bool = True


def one_at_a_time(decide: Decide) -> DecideBatch:
    """A per-event decision as a batch handler (for decisions not worth a set-based rewrite)."""

    async def each(conn: asyncpg.Connection, items: list[Inbound]) -> list[Outgoing]:
        outgoing: list[Outgoing] = []
        for item in items:
            outgoing += await decide(conn, item)
        return outgoing

    return each


class UnitOfWork:
    """One transaction's work: its connection, and the events to send once it has committed."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.emitted: list[Outgoing] = []

    def emit(self, *events: Outgoing) -> None:
        """Write to the outbox with this transaction; sent after commit."""
        self.emitted += events

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
    return Letter(record, dead_letters.PROCESSING_FAILED, error).event(source)


class Stage:
    """The consume loop of one service: inbox, decision, outbox, send."""

    def __init__(self, *, schema: str, source: str,
                 handlers: Mapping[str, Handler] | None = None, default: Handler | None = None,
                 redelivered: DecideBatch | None = None,
                 on_invalid_envelope: Decide | None = None,
                 answers_invalid_envelopes_on: frozenset[str] = frozenset(),
                 trusted: Mapping[str, frozenset[str]] | None = None, max_unacked: int = 20_000,
                 on_commit: Callable[[], None] | None = None,
                 on_rollback: Callable[[], None] | None = None) -> None:
        self.schema = schema
        self.source = source
        # Event type -> handler.
        self.handlers: dict[str, Handler] = dict(handlers or {})
        # For the types no handler is registered for (intake answers every request, whatever its type).
        # Without one, a contract type on its own topic that the stage has no handler for is not its
        # business (skipped); one on another topic is a dead letter (`wrong_topic`), and so is a type
        # outside the contract (`unknown_type`: a producer ahead of this consumer).
        self.default = default
        # Called instead of the handler with the batch's events the inbox has seen (most stages: none).
        self.redelivered = redelivered
        # Only intake answers a malformed envelope (on refunds.requested) with a rejection; elsewhere it
        # is a dead letter. `on_invalid_envelope` is that answer.
        self.answers_invalid_envelopes_on = answers_invalid_envelopes_on
        self.on_invalid_envelope = on_invalid_envelope
        # Per consumed topic, the sources whose events it acts on (the contract's, unless a test narrows it).
        self.trusted = topics.TRUSTED_SOURCES if trusted is None else trusted
        self.pool: asyncpg.Pool | None = None
        self.producer: AIOKafkaProducer | None = None
        self.committed = asyncio.Event()
        # Called after each consume-path transaction commits (before `committed` is set), or rolls back:
        # what a handler took for this process (approval's parked decisions, payout's claimed intents)
        # is handed to its worker in memory, or dropped. The consume path runs one transaction at a time.
        self.on_commit = on_commit
        self.on_rollback = on_rollback
        # Outbox rows the broker has acked, deleted by the next transaction.
        self._published: list[int] = []
        # Sends not acked yet; past `max_unacked` a send waits for the oldest (backpressure).
        self._unacked: set[asyncio.Future] = set()
        self.max_unacked = max_unacked
        # Off until the service's settings set its limit (shared/runtime/service.py).
        self.breaker = DeadLetterBreaker(schema)

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
            await self.acked()
            await self.producer.stop()

    async def acked(self) -> None:
        """Wait until every record sent so far has been acked (or failed: its row stays for the relay)."""
        if self._unacked:
            await asyncio.gather(*list(self._unacked), return_exceptions=True)

    # -- the consume step -------------------------------------------------------------------------

    async def process(self, records: Sequence[ConsumerRecord]) -> None:
        inbound = [self._read(record) for record in records]
        with tracing.consume(inbound) as spans:  # tracing: a CONSUMER span per event, ended after the batch
            await self._process(inbound, spans)

    async def _process(self, inbound: Sequence[Inbound], spans: "tracing.Spans") -> None:
        try:
            pending = await self._in_transaction(inbound, spans)
        except TRANSIENT_DB_ERRORS:
            await asyncio.sleep(1.0)  # back off before the batch is fetched again
            raise
        except Exception:
            log.exception("batch_failed_retrying_one_by_one", size=len(inbound))
            pending = await self._one_by_one(inbound, spans)
        self.committed.set()
        await self._send_committed(pending)

    def _read(self, record: ConsumerRecord) -> Inbound:
        try:
            return Inbound(record, decode(record.value, record.headers))
        except InvalidEnvelope as invalid:
            return Inbound(record, None, invalid)
        except Exception:  # UnreadableMessage, or anything the SDK throws at odd bytes
            return Inbound(record, None)

    async def _in_transaction(self, inbound: Sequence[Inbound], spans: "tracing.Spans") -> list[tuple[int, Outgoing]]:
        letters: list[Letter] = []  # counted only once the transaction has committed
        try:
            async with (self.pool.acquire() as conn, self._forgetting_published(conn) as forget,
                        conn.transaction()):
                await forget()
                outgoing, _ = await self._decide_and_keep(conn, inbound, spans, letters)
                pending = await self._write_outbox(conn, outgoing)
        except BaseException:
            if self.on_rollback is not None:
                self.on_rollback()
            raise
        if self.on_commit is not None:
            self.on_commit()
        self._count_dead_letters(letters)
        return pending

    async def _decide_and_keep(self, conn: asyncpg.Connection, inbound: Sequence[Inbound], spans: "tracing.Spans",
                               letters: list[Letter], *, replay_of: int | None = None
                               ) -> tuple[list[Outgoing], list[int]]:
        """Decide the events; save what was dead-lettered in the stage's table (each naming the letter it
        is a replay of, if any). Returns the events for the same transaction's outbox, the DLQ's among
        them, each continuing its inbound event's trace, and the new letters' ids."""
        outgoing = await self._decide_all(conn, inbound, letters)
        events, kept = await self._keep_dead_letters(conn, letters, replay_of=replay_of)
        return tracing.stamp(outgoing + events, spans), kept  # tracing

    async def _keep_dead_letters(self, conn: asyncpg.Connection, letters: Sequence[Letter], *,
                                 replay_of: int | None = None) -> tuple[list[Outgoing], list[int]]:
        """Save the letters in the stage's table: their DLQ events, for the same transaction's outbox, and ids."""
        kept = await dead_letters.keep(conn, self.schema, letters, replay_of=replay_of)
        return [letter.event(self.source) for letter in letters], kept

    async def _decide_all(self, conn: asyncpg.Connection, inbound: Sequence[Inbound],
                          letters: list[Letter]) -> list[Outgoing]:
        outgoing: list[Outgoing] = []
        usable: list[Inbound] = []
        for item in inbound:
            letter = self._unusable(item)
            if letter is not None:
                letters.append(letter)
            elif item.event is None:
                outgoing += await self.on_invalid_envelope(conn, item)  # intake answers it
            else:
                usable.append(item)
        # Sorted before the inbox claims them: a record dead-lettered here stays unclaimed, so its replay
        # (once a deploy knows its type, say) is processed, not skipped as seen.
        groups = self._by_handler(usable, letters)
        fresh = await self._claim(conn, [item.event for _, items in groups for item in items])
        position = {id(item.record): n for n, item in enumerate(usable)}
        seen: list[Inbound] = []
        first_time: list[tuple[DecideBatch, list[Inbound]]] = []
        for decide, items in groups:
            first_time.append((decide, []))
            for item in items:
                key = (item.event.get_source(), item.event.get_id())
                if key in fresh:
                    fresh.discard(key)
                    first_time[-1][1].append(item)
                else:  # redelivered, or twice in this batch: its effects are already saved
                    seen.append(item)
        if seen and self.redelivered is not None:
            outgoing += await self.redelivered(conn, sorted(seen, key=lambda item: position[id(item.record)]))
        for decide, items in first_time:
            if items:
                outgoing += await decide(conn, items)
        return outgoing

    def _by_handler(self, items: Iterable[Inbound], letters: list[Letter]) -> list[tuple[DecideBatch, list[Inbound]]]:
        """The batch's events per handler, each handler's in consumption order; validated where asked."""
        groups: dict[int, tuple[DecideBatch, list[Inbound]]] = {}
        for item in items:
            event_type = item.event.get_type()
            handler = self.handlers.get(event_type, self.default)
            if handler is None:
                if event_type not in EVENT_TYPES:
                    letters.append(Letter(item.record, dead_letters.UNKNOWN_TYPE,
                                          f"unknown_type: {event_type} is not a contract event type"))
                elif EVENT_TYPES[event_type][1] != item.record.topic:
                    letters.append(Letter(item.record, dead_letters.WRONG_TOPIC,
                                          f"wrong_topic: {event_type} belongs on {EVENT_TYPES[event_type][1]}"))
                continue  # a contract event on its own topic that this stage does not act on
            if handler.validated and item.event.get_type() in EVENT_TYPES:
                try:
                    item = _validated(item)
                except ValidationError as error:
                    letters.append(Letter(item.record, dead_letters.INVALID_DATA,
                                          f"invalid {item.event.get_type()} data: {error_text(error)}"))
                    continue
            groups.setdefault(id(handler), (handler.decide, []))[1].append(item)
        return list(groups.values())

    def _unusable(self, item: Inbound) -> Letter | None:
        """The dead letter for a record no handler may see: unreadable, invalid, or from an untrusted source."""
        if item.event is None and not (item.invalid and item.record.topic in self.answers_invalid_envelopes_on):
            if item.invalid:
                return Letter(item.record, dead_letters.INVALID_ENVELOPE, str(item.invalid))
            return Letter(item.record, dead_letters.NOT_CLOUDEVENT, "not a CloudEvent (not JSON, or not an object)",
                          counted_as="unreadable")
        if item.event is not None and not self._trusted(item):
            log.warning("untrusted_source", topic=item.record.topic, source=item.event.get_source(),
                        event_type=item.event.get_type(), offset=item.record.offset)
            return Letter(item.record, dead_letters.UNTRUSTED_SOURCE,
                          f"untrusted_source: {item.record.topic} accepts events only from "
                          f"{', '.join(sorted(self.trusted[item.record.topic]))}")
        return None

    async def _one_by_one(self, inbound: Sequence[Inbound], spans: "tracing.Spans") -> list[tuple[int, Outgoing]]:
        ids: list[tuple[int, Outgoing]] = []
        for item in inbound:
            try:
                ids += await self._in_transaction([item], spans)
            except TRANSIENT_DB_ERRORS:
                raise
            except Exception as error:
                log.exception("poison_message", topic=item.record.topic,
                              partition=item.record.partition, offset=item.record.offset)
                letter = _failed(item.record, error)
                async with self.pool.acquire() as conn, conn.transaction():
                    events, _ = await self._keep_dead_letters(conn, [letter])
                    ids += await self._write_outbox(conn, tracing.stamp(events, spans))  # tracing
                self._count_dead_letters([letter])
        return ids

    def _count_dead_letters(self, letters: Sequence[Letter], *, consumed: bool = True) -> None:
        """Count what committed; only what the consume loop dead-lettered counts towards the breaker."""
        for letter in letters:
            MESSAGES_DEAD_LETTERED.labels(self.schema, letter.counted_as or letter.reason).inc()
            DEAD_LETTERS.labels(self.schema, letter.reason).inc()
        if consumed:
            self.breaker.observe(len(letters))

    # -- replaying a dead letter ------------------------------------------------------------------

    async def replay(self, letter_id: int, actor: str, reason: str) -> asyncpg.Record:
        """Run an open dead letter's record through this stage's consume path again, in one transaction that
        also marks it replayed (by `actor`, for `reason`). An event the inbox has seen changes nothing; one
        that is dead-lettered again is a new dead letter, which the old one names (`replayed_as`).
        DeadLetterNotFound / DeadLetterHandled (not open) otherwise."""
        async with self.pool.acquire() as conn:
            try:
                row, pending, letters = await self._replay(conn, letter_id, actor, reason)
            except (*TRANSIENT_DB_ERRORS, dead_letters.DeadLetterNotFound, dead_letters.DeadLetterHandled):
                raise
            except Exception as error:  # the handler failed on it again (as the consume loop's poison)
                log.exception("dead_letter_replay_failed", stage=self.schema, dead_letter=letter_id)
                row, pending, letters = await self._replay_failed(conn, letter_id, actor, reason, error)
        self._count_dead_letters(letters, consumed=False)
        log.info("dead_letter_replayed", stage=self.schema, dead_letter=letter_id, actor=actor, reason=reason,
                 dead_lettered_again=row["replayed_as"])
        await self._send_committed(pending)
        return row

    async def _replay(self, conn: asyncpg.Connection, letter_id: int, actor: str, reason: str):
        letters: list[Letter] = []
        async with self._forgetting_published(conn) as forget, conn.transaction():
            await forget()
            row = await dead_letters.load_open(conn, self.schema, letter_id)
            inbound = [self._read(dead_letters.original_record(row))]
            with tracing.consume(inbound) as spans:
                outgoing, again = await self._decide_and_keep(conn, inbound, spans, letters, replay_of=letter_id)
            row = await dead_letters.mark_handled(conn, self.schema, letter_id, "replayed", actor, reason,
                                                  replayed_as=again[0] if again else None)
            pending = await self._write_outbox(conn, outgoing)
        return row, pending, letters

    async def _replay_failed(self, conn: asyncpg.Connection, letter_id: int, actor: str, reason: str,
                             error: Exception):
        async with conn.transaction():
            row = await dead_letters.load_open(conn, self.schema, letter_id)
            letter = _failed(dead_letters.original_record(row), error)
            events, [again] = await self._keep_dead_letters(conn, [letter], replay_of=letter_id)
            row = await dead_letters.mark_handled(conn, self.schema, letter_id, "replayed", actor, reason,
                                                  replayed_as=again)
            pending = await self._write_outbox(conn, events)
        return row, pending, [letter]

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

    # -- the outbox -------------------------------------------------------------------------------

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
            # so this waits until that send is acked, and this row is published after it. (A row this
            # process sent and is still waiting on an ack for may go too: the producer keeps a
            # partition's order, so its record reaches the topic before this one.)
            await conn.execute(
                f"DELETE FROM {self.schema}.outbox o USING unnest($1::text[], $2::text[], $3::bigint[]) "
                "AS n(topic, key, id) WHERE o.topic = n.topic AND o.key = n.key AND o.id < n.id",
                [t for t, _ in newest], [k for _, k in newest], list(newest.values()))
        return pending

    async def _send(self, pending: Sequence[tuple[int, Outgoing]]) -> None:
        """Send committed outbox rows in order (one producer keeps a partition's order) without waiting
        for the acks: an acked row is deleted by the next transaction, an unacked one stays for the relay."""
        for row_id, item in pending:
            if len(self._unacked) >= self.max_unacked:
                await asyncio.wait(self._unacked, return_when=asyncio.FIRST_COMPLETED)
            ack = await self._send_one(item)
            self._unacked.add(ack)
            ack.add_done_callback(lambda done, row_id=row_id: self._on_ack(done, row_id))

    async def _send_committed(self, pending: Sequence[tuple[int, Outgoing]]) -> None:
        try:
            await self._send(pending)
        except Exception:
            # Committed: the relay sends what is left; the caller's work is done.
            log.exception("outbox_send_deferred_to_relay", rows=len(pending))

    def _on_ack(self, ack: asyncio.Future, row_id: int) -> None:
        self._unacked.discard(ack)
        if not ack.cancelled() and ack.exception() is None:
            self._published.append(row_id)
        elif not ack.cancelled():
            log.warning("outbox_send_failed_left_for_relay", row_id=row_id, error=type(ack.exception()).__name__)

    async def _send_and_wait(self, outgoing: Sequence[Outgoing]) -> None:
        """Send in order and wait for every ack (the relay, which deletes what it sent itself)."""
        await asyncio.gather(*[await self._send_one(item) for item in outgoing])

    async def _send_one(self, item: Outgoing) -> asyncio.Future:
        """Hand one record to the producer; the future resolves with the broker's ack."""
        return await self.producer.send(item.topic, item.value, key=item.key.encode() if item.key else None,
                                        headers=list(item.headers.items()))

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

    # -- work outside the consume loop ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def unit_of_work(self, conn: asyncpg.Connection | None = None):
        """One transaction that saves state and writes what it emits to the outbox, then sends it after
        commit. On a connection the caller holds (`conn`), or on one from the pool."""
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self.pool.acquire())
            uow = UnitOfWork(conn)
            async with self._forgetting_published(conn) as forget, conn.transaction():
                await forget()
                yield uow
                pending = await self._write_outbox(conn, uow.emitted)
        await self._send_committed(pending)

    async def prune_inbox_forever(self, retention_days: float, interval: float = 3600.0) -> None:
        """Prune the inbox, and the dead letters with it (a replay must fall inside the inbox's memory)."""
        async def prune() -> None:
            await self.prune_inbox(retention_days)
            await dead_letters.prune(self.pool, self.schema, retention_days)

        await every(interval, prune, name="inbox_prune")

    async def prune_inbox(self, retention_days: float, chunk: int = 10_000) -> int:
        """Forget event ids older than `retention_days` (no topic still holds their records), a chunk per
        statement so pruning never holds many locks at once."""
        return await db.delete_older(self.pool, f"{self.schema}.inbox", "ctid", "received_at",
                                     retention_days * 86400, chunk)

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
                await self._send_and_wait([Outgoing(topic=r["topic"], key=r["key"], value=r["value"],
                                                    headers={k: v.encode() for k, v in r["headers"].items()},
                                                    event_id="") for r in rows])
                await conn.execute(f"DELETE FROM {self.schema}.outbox WHERE id = ANY($1::bigint[])",
                                   [r["id"] for r in rows])
        log.warning("outbox_relayed", rows=len(rows))


def _failed(record: ConsumerRecord, error: Exception) -> Letter:
    # Paths and error types only: a ValidationError's own text quotes the customer's data.
    return Letter(record, dead_letters.PROCESSING_FAILED, error_text(error), counted_as=type(error).__name__)


def _validated(item: Inbound) -> Inbound:
    model, _ = EVENT_TYPES[item.event.get_type()]
    return Inbound(item.record, item.event, item.invalid, model.model_validate(item.event.get_data()))
