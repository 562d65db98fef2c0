"""The load side of `make bench`: an open-loop sender, and what is watched on the broker and the
processes while a step runs (consumer lag per group, resident memory)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.runtime.kafka_auth import KafkaAuth
from tools.bench_measure import group_lag, rss_mb

# (key, value, headers) of one record, built before the timed part.
Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


@dataclass
class Schedule:
    """When each record of a step was due (monotonic seconds), and how late the sender ran at worst."""

    due: list[float]
    worst_slip: float


async def send_open_loop(producer: AIOKafkaProducer, topic: str, records: Sequence[Record], rate: float,
                         tick: float = 0.005) -> Schedule:
    """Send record i at start + i/rate whatever the answers (open loop: a slow system under test does not
    slow the offered load down), then wait for the broker's acks. Latencies are measured from `due`, so a
    sender that slips does not hide the wait (no coordinated omission); `worst_slip` says if it did."""
    start = time.monotonic() + 0.05
    due = [start + i / rate for i in range(len(records))]
    acks, worst, i = [], 0.0, 0
    while i < len(records):
        now = time.monotonic()
        if due[i] > now:
            await asyncio.sleep(min(due[i] - now, tick))
            continue
        worst = max(worst, now - due[i])
        while i < len(records) and due[i] <= now:
            key, value, headers = records[i]
            acks.append(await producer.send(topic, value, key=key, headers=headers))
            i += 1
    await asyncio.gather(*acks)
    return Schedule(due, worst)


class LagProbe:
    """Committed offsets (admin client) against log end offsets (a group-less consumer) per consumer
    group, as the operator sees them; nothing is joined or committed."""

    def __init__(self, bootstrap: str, auth: KafkaAuth) -> None:
        options = auth.client_options()
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-lag", **options)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="bench-lag", group_id=None,
                                          enable_auto_commit=False, **options)
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def _partitions_of(self, topic: str) -> list[TopicPartition]:
        if topic not in self._partitions:
            described = await self._admin.describe_topics([topic])
            self._partitions[topic] = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
        return self._partitions[topic]

    async def lag(self, group: str, topics: Sequence[str]) -> int:
        partitions = [tp for topic in topics for tp in await self._partitions_of(topic)]
        end = await self._consumer.end_offsets(partitions)
        return group_lag(end, await self._admin.list_consumer_group_offsets(group))


@dataclass
class StepWatch:
    """Samples every `interval` s while a step runs: each group's lag and each process's RSS, keeping
    the maximum of each."""

    probe: LagProbe
    groups: Mapping[str, Sequence[str]]  # group -> the topics it consumes
    pids: Mapping[str, int]  # process -> pid, for RSS
    interval: float = 1.0
    max_lag: dict[str, int] = field(default_factory=dict)
    max_rss_mb: dict[str, float] = field(default_factory=dict)

    async def _sample(self) -> None:
        lags = await asyncio.gather(*(self.probe.lag(g, t) for g, t in self.groups.items()), return_exceptions=True)
        for group, lag in zip(self.groups, lags, strict=True):
            if isinstance(lag, int):
                self.max_lag[group] = max(self.max_lag.get(group, 0), lag)
        for name, pid in self.pids.items():
            if (rss := rss_mb(pid)) is not None:
                self.max_rss_mb[name] = max(self.max_rss_mb.get(name, 0.0), rss)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await self._sample()
            await asyncio.sleep(max(self.interval - (time.monotonic() - started), 0.05))

    @contextlib.asynccontextmanager
    async def running(self):
        task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self._sample()  # the end state counts too
