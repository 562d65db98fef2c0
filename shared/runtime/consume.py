"""The consume loop every stage runs: fetch a batch, let the stage save it, commit the offsets.

It replaces FastStream's batch subscriber, which cost every hop a fixed sleep after an empty
fetch, a copy of every record in the parser, and a broker round trip (the offset commit) between
one batch and the next fetch. Here:

- `getmany` waits on the broker (fetch_max_wait_ms / fetch_min_bytes), never on a sleep, and
  aiokafka's fetcher prefetches the next records while the stage works on these;
- offsets are committed in the background once the stage's transaction has committed (the outbox
  already holds what the batch publishes, so nothing is lost if the process dies before the
  commit: the batch is redelivered and the inbox skips it), at most one commit in flight and at
  most one per `commit_interval_seconds` (each is a broker request; a busy stage saves many
  batches a second);
- a batch the stage raises on (the database unreachable) is sought back to and fetched again
  after a pause; a poison record never gets here (the stage dead-letters it);
- a batch spanning partitions is handed over in publish order (the records' timestamps), each
  partition's own order kept: two requests against one payment keyed apart are settled first come,
  first served, however the fetch grouped them;
- on a rebalance, the batch in hand finishes and its offsets are committed before the
  partitions go; on stop, the same, within the graceful timeout.
"""

import asyncio
import contextlib
import heapq
import time
from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Histogram

from shared.runtime.kafka_auth import KafkaAuth
from shared.runtime.stage import Stage

log = structlog.get_logger()

BATCH_SIZE = Histogram("refund_consumer_batch_records", "Records per consumed batch", ["group"],
                       buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
BATCH_SECONDS = Histogram("refund_consumer_batch_seconds", "Seconds a stage spent saving one batch", ["group"],
                          buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: "StageConsumer") -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Let the batch in hand finish, then hand over its offsets with the partitions.
        async with self.loop.working:
            await self.loop.commit_now()

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("partitions_assigned", group=self.loop.group_id, partitions=len(assigned))
        self.loop.hold_if_breaker_open()


def in_publish_order(batches) -> list:
    """The records of per-partition batches merged by timestamp; within a partition, offset order stays
    (a merge, not a sort: a producer's clock may step back, and a partition's order is the contract's)."""
    return list(heapq.merge(*batches, key=lambda record: record.timestamp))


class StageConsumer:
    """One consumer group's loop feeding one stage. `group_id`, `topic_names` and `consumer` are what
    health (shared/runtime/consumer_health.py) and the deploy checks read."""

    def __init__(self, stage: Stage, topic_names: Sequence[str], *, group_id: str, max_records: int,
                 retry_after_seconds: float = 1.0,
                 commit_interval_seconds: float = 0.2) -> None:
        self.stage = stage
        self.topic_names = tuple(topic_names)
        self.group_id = group_id
        self.max_records = max_records
        self.retry_after_seconds = retry_after_seconds
        self.commit_interval_seconds = commit_interval_seconds
        self._last_commit = 0.0
        self.consumer: AIOKafkaConsumer | None = None
        self.working = asyncio.Lock()  # held while a batch is being saved
        self._uncommitted: dict[TopicPartition, int] = {}
        self._commit: asyncio.Task | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        # True while the stage's dead-letter breaker holds this consumer's partitions paused.
        self.held = False
        # A getmany window this long with nothing fetched: the consumer is idle (see `_pace`).
        self.idle_after_ms = 100
        self._busy_fetch: tuple[int, int] = (1, 100)
        self._idle_fetch: tuple[int, int] | None = None
        self._pacing: tuple[int, int] | None = None

    async def start(self, bootstrap_servers: str, client_id: str, auth: KafkaAuth | None = None, *,
                    fetch_min_bytes: int = 1, fetch_max_wait_ms: int = 100, fetch_idle_wait_ms: int = 0) -> None:
        """`fetch_min_bytes`/`fetch_max_wait_ms` while records flow; `fetch_idle_wait_ms` (0: off) once a
        fetch window passed with none (see `_pace`)."""
        self._busy_fetch = (fetch_min_bytes, fetch_max_wait_ms)
        self._idle_fetch = (1, fetch_idle_wait_ms) if fetch_idle_wait_ms > 0 else None
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, client_id=client_id, group_id=self.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_min_bytes=fetch_min_bytes,
            max_poll_records=self.max_records, **(auth or KafkaAuth()).client_options())
        await self.consumer.start()
        self.consumer.subscribe(list(self.topic_names), listener=_Rebalance(self))
        self._task = asyncio.create_task(self._run(), name=f"consume:{self.group_id}")

    async def stop(self, timeout: float) -> None:
        """Stop fetching; let the batch in hand finish within `timeout`, commit it, leave the group."""
        self._stopping = True
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                log.warning("batch_abandoned_on_stop", group=self.group_id)
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.commit_now()
        if self.consumer is not None:
            await self.consumer.stop()

    def hold_if_breaker_open(self) -> None:
        """Pause every assigned partition while the stage's dead-letter breaker is open; resume once closed.
        Paused, the loop keeps polling (the group keeps this member) and fetches nothing."""
        should_hold = self.stage.breaker.open
        if should_hold:
            self.consumer.pause(*self.consumer.assignment())
        elif self.held:
            self.consumer.resume(*self.consumer.paused())
            log.info("consumer_resumed", group=self.group_id)
        if should_hold and not self.held:
            log.error("consumer_paused_by_dead_letter_breaker", group=self.group_id)
        self.held = should_hold

    async def _run(self) -> None:
        while not self._stopping:
            if self.held or self.stage.breaker.open:
                if not self.held:
                    await self.commit_now()  # what is saved stays saved
                self.hold_if_breaker_open()
            try:
                fetched = await self.consumer.getmany(timeout_ms=self.idle_after_ms, max_records=self.max_records)
            except KafkaError:
                log.exception("consumer_fetch_failed", group=self.group_id)
                await asyncio.sleep(self.retry_after_seconds)
                continue
            self._pace(busy=bool(fetched))
            if not fetched:
                continue
            async with self.working:
                await self._save(fetched)

    def _pace(self, *, busy: bool) -> None:
        """How the next fetches wait at the broker. Records flowing: for `min_bytes` or `max_wait_ms`, so
        a fetch carries a batch, not a record (make bench: the broker's CPU per refund halved). Idle (a
        window passed with nothing): for the first byte, or `idle_wait_ms` -- an idle consumer fetches
        twice a second, not 40 times (the broker's and each service's idle CPU was nearly all empty
        fetches), and the first record after a lull goes at once. aiokafka reads these two settings from
        its fetcher for every request it builds; they are not public, hence the guard."""
        pacing = self._busy_fetch if busy or self._idle_fetch is None else self._idle_fetch
        fetcher = getattr(self.consumer, "_fetcher", None)
        if pacing == self._pacing or not hasattr(fetcher, "_fetch_max_wait_ms"):
            return
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = pacing
        self._pacing = pacing

    async def _save(self, fetched: dict[TopicPartition, list]) -> None:
        records = in_publish_order(fetched.values())
        started = time.perf_counter()
        try:
            await self.stage.process(records)
        except Exception:
            # The stage could not save (the database is unreachable): fetch the same records again.
            log.exception("batch_not_saved_redelivering", group=self.group_id, size=len(records))
            for tp, batch in fetched.items():
                if tp in self.consumer.assignment():
                    self.consumer.seek(tp, batch[0].offset)
            await asyncio.sleep(self.retry_after_seconds)
            return
        BATCH_SIZE.labels(self.group_id).observe(len(records))
        BATCH_SECONDS.labels(self.group_id).observe(time.perf_counter() - started)
        for tp, batch in fetched.items():
            self._uncommitted[tp] = batch[-1].offset + 1
        if self._commit is None or self._commit.done():
            self._commit = asyncio.create_task(self._commit_soon())

    async def _commit_soon(self) -> None:
        # One commit in flight; whatever the next batches saved meanwhile goes in the next one.
        while self._uncommitted:
            await asyncio.sleep(max(0.0, self._last_commit + self.commit_interval_seconds - time.monotonic()))
            await self._commit_offsets()

    async def commit_now(self) -> None:
        if self._commit is not None and not self._commit.done():
            await asyncio.gather(self._commit, return_exceptions=True)
        await self._commit_offsets()

    async def _commit_offsets(self) -> None:
        offsets, self._uncommitted = self._uncommitted, {}
        self._last_commit = time.monotonic()
        assigned = self.consumer.assignment()
        offsets = {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as error:
            # The group moved on (a rebalance): the next owner resumes from the last commit and the
            # inbox skips what this one saved.
            log.warning("offset_commit_failed", group=self.group_id, error=type(error).__name__)
