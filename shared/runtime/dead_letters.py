"""A stage's dead letters: kept in its own schema, read decoded, replayed or discarded by staff, and a
breaker that stops the stage consuming when it dead-letters too many in a minute.

Every record a stage cannot use goes to `refunds.dlq` (for whoever watches the topic) and, in the same
transaction, to the stage's `dead_letters` table with its reason code, the error (what broke, never the
values) and the raw key, bytes and headers. From there a senior reviewer or finance lead replays it once
the cause is fixed -- through this stage's own consume path, in one transaction, the inbox making a
replay of an event already processed a no-op -- or discards it, saying why.

The breaker (`DEAD_LETTER_LIMIT_PER_MINUTE`, 0 = off) is the guard against a bad deploy diverting every
refund to the dead letters: past the limit in a rolling minute the stage's consumer pauses its
partitions (what is saved stays committed; the rest waits on the topic) until staff close it. It lives
in the process: a restart closes it, and each replica has its own.
"""

import base64
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import orjson
import structlog
from aiokafka import ConsumerRecord
from prometheus_client import Counter, Gauge

from shared.contract.envelope import Outgoing, encode
from shared.runtime import db
from shared.contract.events import DeadLetter

log = structlog.get_logger()

DEAD_LETTERS = Counter("refund_dead_letters_total", "Records a stage dead-lettered, by reason code",
                       ["stage", "reason"])
BREAKER_OPEN = Gauge("refund_stage_dead_letter_breaker_open",
                     "1 while the stage has stopped consuming: it dead-lettered more than its limit in a minute",
                     ["stage"])

# Reason codes (the `reason` of a dead letter).
NOT_CLOUDEVENT = "not_cloudevent"
INVALID_ENVELOPE = "invalid_envelope"
UNTRUSTED_SOURCE = "untrusted_source"
UNKNOWN_TYPE = "unknown_type"
WRONG_TOPIC = "wrong_topic"
INVALID_DATA = "invalid_data"
PROCESSING_FAILED = "processing_failed"  # failed its own transaction too, after its batch failed


@dataclass(frozen=True)
class Letter:
    """One record the stage could not use, and why. `counted_as`: its label on the older
    `refund_messages_dead_lettered_total` (the error's type for a processing failure)."""

    record: ConsumerRecord
    reason: str
    error: str
    counted_as: str = ""

    def event(self, source: str) -> Outgoing:
        """Its `refund.dead-lettered.v1` for refunds.dlq, keyed by where the record was."""
        record = self.record
        payload = DeadLetter(
            topic=record.topic, partition=record.partition, offset=record.offset,
            key=record.key.decode(errors="replace") if record.key else None,
            raw_base64=base64.b64encode(record.value or b"").decode(),
            headers={k: v.decode(errors="replace") for k, v in (record.headers or ())},
            error=self.error[:2000], dead_lettered_at=datetime.now(UTC))
        return encode(payload, source=source, key=f"{record.topic}/{record.partition}/{record.offset}")


class DeadLetterNotFound(LookupError):
    pass


class DeadLetterHandled(Exception):
    """Only an open dead letter can be replayed or discarded."""


# -- the table ------------------------------------------------------------------------------------

_COLUMNS = ("id, topic, partition, \"offset\", \"timestamp\", key, value, headers, reason, error, dead_lettered_at, "
            "state, handled_by, handled_reason, handled_at, replay_of, replayed_as")


async def keep(conn: asyncpg.Connection, schema: str, letters: Sequence[Letter],
               replay_of: int | None = None) -> list[int]:
    """Save the letters (in the transaction that writes their DLQ outbox rows); their ids, in order."""
    if not letters:
        return []
    records = [letter.record for letter in letters]
    # Headers go as JSON text: asyncpg would read a list of pairs as a two-dimensional array.
    rows = await conn.fetch(
        f"INSERT INTO {schema}.dead_letters (topic, partition, \"offset\", \"timestamp\", key, value, headers, "
        "reason, error, replay_of) SELECT t.topic, t.part, t.off, t.ts, t.key, t.value, t.headers::jsonb, "
        "t.reason, t.error, $10::bigint FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bytea[], "
        "$6::bytea[], $7::text[], $8::text[], $9::text[]) "
        "AS t(topic, part, off, ts, key, value, headers, reason, error) RETURNING id",
        [r.topic for r in records], [r.partition for r in records], [r.offset for r in records],
        [r.timestamp or 0 for r in records], [r.key for r in records], [r.value or b"" for r in records],
        [orjson.dumps([[name, base64.b64encode(value or b"").decode()] for name, value in (r.headers or ())]).decode()
         for r in records],
        [letter.reason for letter in letters], [letter.error[:2000] for letter in letters], replay_of)
    return [row["id"] for row in rows]


async def load(conn: asyncpg.Connection, schema: str, letter_id: int, *, lock: bool = False) -> asyncpg.Record:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM {schema}.dead_letters WHERE id = $1"
                              + (" FOR UPDATE" if lock else ""), letter_id)
    if row is None:
        raise DeadLetterNotFound(f"no dead letter {letter_id}")
    return row


async def load_open(conn: asyncpg.Connection, schema: str, letter_id: int) -> asyncpg.Record:
    """The dead letter, locked for this transaction; DeadLetterHandled unless it is open."""
    row = await load(conn, schema, letter_id, lock=True)
    if row["state"] != "open":
        raise _handled(row)
    return row


def _handled(row: asyncpg.Record) -> "DeadLetterHandled":
    return DeadLetterHandled(f"dead letter {row['id']} is {row['state']}, not open "
                             f"(by {row['handled_by']} at {row['handled_at'].isoformat()})")


async def listed(conn: asyncpg.Connection, schema: str, state: str | None, limit: int) -> list[asyncpg.Record]:
    """Oldest first, like any queue of work."""
    return await conn.fetch(f"SELECT {_COLUMNS} FROM {schema}.dead_letters WHERE $1::text IS NULL OR state = $1 "
                            "ORDER BY id LIMIT $2", state, limit)


async def mark_handled(conn: asyncpg.Connection, schema: str, letter_id: int, state: str, actor: str, reason: str,
                       replayed_as: int | None = None) -> asyncpg.Record:
    """Close an open dead letter (replayed or discarded) with who and why; DeadLetterHandled unless it is open."""
    row = await conn.fetchrow(
        f"UPDATE {schema}.dead_letters SET state = $2, handled_by = $3, handled_reason = $4, handled_at = now(), "
        f"replayed_as = $5 WHERE id = $1 AND state = 'open' RETURNING {_COLUMNS}",
        letter_id, state, actor, reason, replayed_as)
    if row is None:
        raise _handled(await load(conn, schema, letter_id))
    return row


def original_record(row: asyncpg.Record) -> ConsumerRecord:
    """The record as the stage consumed it, for a replay."""
    headers = [(name, base64.b64decode(value)) for name, value in row["headers"]]
    value = bytes(row["value"])
    key = bytes(row["key"]) if row["key"] is not None else None
    return ConsumerRecord(row["topic"], row["partition"], row["offset"], row["timestamp"], 0, key, value, None,
                          len(key or b""), len(value), headers)


async def prune(pool: asyncpg.Pool, schema: str, retention_days: float, chunk: int = 10_000) -> int:
    """Forget dead letters as old as the inbox forgets events (shared/runtime/stage.py `prune_inbox`)."""
    return await db.delete_older(pool, f"{schema}.dead_letters", "id", "dead_lettered_at", retention_days * 86400,
                                 chunk)


# -- what staff see -------------------------------------------------------------------------------

def decoded(raw: bytes) -> tuple[object, str]:
    """The payload as JSON if it parses, else as text, else base64; and which."""
    try:
        return orjson.loads(raw), "json"
    except orjson.JSONDecodeError:
        pass
    try:
        return raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), "base64"


def view(service: str, row: asyncpg.Record) -> dict:
    payload, encoding = decoded(bytes(row["value"]))
    key = bytes(row["key"]).decode(errors="replace") if row["key"] is not None else None
    return {
        "id": row["id"], "service": service, "topic": row["topic"], "partition": row["partition"],
        "offset": row["offset"], "key": key, "reason": row["reason"], "error": row["error"],
        "payload": payload, "payload_encoding": encoding,
        "headers": {name: base64.b64decode(value).decode(errors="replace") for name, value in row["headers"]},
        "dead_lettered_at": _time(row["dead_lettered_at"]), "state": row["state"],
        "handled_by": row["handled_by"], "handled_reason": row["handled_reason"],
        "handled_at": _time(row["handled_at"]), "replay_of": row["replay_of"], "replayed_as": row["replayed_as"],
    }


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- the breaker ----------------------------------------------------------------------------------

class DeadLetterBreaker:
    """Opens when the stage dead-letters more than `limit_per_minute` in a rolling minute (0 = never);
    the stage's consumers pause while it is open. Staff close it."""

    WINDOW_SECONDS = 60.0

    def __init__(self, stage: str, limit_per_minute: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stage = stage
        self.limit_per_minute = limit_per_minute
        self.clock = clock
        self.opened_at: datetime | None = None
        self._times: deque[float] = deque()
        BREAKER_OPEN.labels(stage).set(0)

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    def last_minute(self) -> int:
        cutoff = self.clock() - self.WINDOW_SECONDS
        while self._times and self._times[0] <= cutoff:
            self._times.popleft()
        return len(self._times)

    def observe(self, count: int) -> None:
        """`count` records were dead-lettered by the consume loop just now."""
        if count <= 0:
            return
        self._times.extend([self.clock()] * count)
        last_minute = self.last_minute()  # also forgets what left the window, with or without a limit
        if self.limit_per_minute > 0 and not self.open and last_minute > self.limit_per_minute:
            self.opened_at = datetime.now(UTC)
            BREAKER_OPEN.labels(self.stage).set(1)
            log.error("dead_letter_breaker_opened", stage=self.stage, last_minute=last_minute,
                      limit_per_minute=self.limit_per_minute)

    def close(self, actor: str, reason: str) -> None:
        """Resume consuming; the minute starts afresh (the dead letters so far were what opened it)."""
        was_open, self.opened_at = self.open, None
        self._times.clear()
        BREAKER_OPEN.labels(self.stage).set(0)
        log.info("dead_letter_breaker_closed", stage=self.stage, actor=actor, reason=reason, was_open=was_open)

    def status(self) -> dict:
        return {"open": self.open, "last_minute": self.last_minute(), "limit_per_minute": self.limit_per_minute,
                "opened_at": _time(self.opened_at)}
