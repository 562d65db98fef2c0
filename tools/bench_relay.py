"""The yardstick of `make bench`: a raw aiokafka 5-hop relay on the pipeline's own broker.

Six topics `bench.hop0..5` (as many partitions as the contract's topics) and five relay processes, one
per hop as the pipeline has one process per stage: each consumes `bench.hop<k>` in its own group through
the stages' own consume loop (shared/runtime/consume.py, with the services' default fetch pacing, batch
size and offset-commit interval) and produces every record to `bench.hop<k+1>` the way a stage does
(acks=all with idempotence, linger 10 ms; a batch's offsets are committed after its acks), with no
database and no decoding. The bench drives hop0 open-loop and times each record's arrival on hop5.

The relays authenticate as devstack's `bench` principal (bench.* topics and groups only); the topics are
created and deleted as devstack's admin.

`python -m tools.bench_relay <run> <hop>` is one relay process (the bench starts and stops them).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from shared.runtime.consume import StageConsumer
from shared.runtime.kafka_auth import KafkaAuth
from shared.runtime.settings import ServiceSettings
from shared.contract.topics import DEFAULT_PARTITIONS, TopicSpec
from tools.bench_load import Record, Schedule, send_open_loop
from tools.platform import consumer_at_end

HOPS = 5
# The services' defaults (shared/runtime/settings.py), so the yardstick batches as a stage does.
STAGE_DEFAULTS = {name: spec.default for name, spec in ServiceSettings.model_fields.items()}
PAYLOAD = 1000  # bytes: about a refund lifecycle event's CloudEvent


def topic(hop: int) -> str:
    return f"bench.hop{hop}"


def group(run: str, hop: int) -> str:
    return f"bench.relay-{run}-{hop}"


def topic_specs() -> list[TopicSpec]:
    return [TopicSpec(topic(hop), partitions=DEFAULT_PARTITIONS) for hop in range(HOPS + 1)]


class _Hop:
    """What the consume loop feeds: a batch's records sent on to the next hop, returned once acked."""

    breaker = SimpleNamespace(open=False)  # no dead letters here

    def __init__(self, producer: AIOKafkaProducer, next_topic: str) -> None:
        self.producer, self.next_topic = producer, next_topic

    async def process(self, records: Sequence) -> None:
        acks = [await self.producer.send(self.next_topic, r.value, key=r.key, headers=list(r.headers))
                for r in records]
        await asyncio.gather(*acks)


async def relay(bootstrap: str, auth: KafkaAuth, run: str, hop: int, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=STAGE_DEFAULTS["kafka_linger_ms"], **auth.client_options())
    await producer.start()
    consumer = StageConsumer(_Hop(producer, topic(hop + 1)), [topic(hop)], group_id=group(run, hop),
                             max_records=STAGE_DEFAULTS["batch_max_records"])
    try:
        await consumer.start(bootstrap, f"bench-relay-{hop}", auth,
                             fetch_min_bytes=STAGE_DEFAULTS["kafka_fetch_min_bytes"],
                             fetch_max_wait_ms=STAGE_DEFAULTS["kafka_fetch_max_wait_ms"],
                             fetch_idle_wait_ms=STAGE_DEFAULTS["kafka_fetch_idle_wait_ms"])
        await stop.wait()
    finally:
        await consumer.stop(timeout=5)
        await producer.stop()


def _serve(run: str, hop: int) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await relay(os.environ["KAFKA_BOOTSTRAP_SERVERS"], KafkaAuth.from_env(), run, hop, stop)

    asyncio.run(main())


@dataclass
class Sink:
    """Notes when each record reaches the last hop, by step and index; records are `<step>:<index>:` + padding."""

    arrived: dict[int, dict[int, float]] = field(default_factory=dict)
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task | None = None

    async def start(self, bootstrap: str, auth: KafkaAuth) -> None:
        self._consumer = await consumer_at_end(bootstrap, topic(HOPS), auth=auth)
        self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200, max_records=10_000)
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    step, index, _ = record.value.split(b":", 2)
                    self.arrived.setdefault(int(step), {}).setdefault(int(index), now)

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()


class RelayRecords(Sequence[Record]):
    """A step's records, made as the sender reaches them (a step at 8,000/s would otherwise hold
    hundreds of MB before it starts)."""

    def __init__(self, step: int, count: int) -> None:
        self.step, self.count = step, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Record:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return f"k{index}".encode(), f"{self.step}:{index}:".encode().ljust(PAYLOAD, b"x"), []


class Relay:
    """The five relay processes, the topics they use, the producer into hop0 and the sink on hop5."""

    def __init__(self, bootstrap: str, admin: KafkaAuth, bench: KafkaAuth, logs: Path, repo_root: Path) -> None:
        self.bootstrap, self.admin, self.bench = bootstrap, admin, bench
        self.logs, self.repo_root = logs, repo_root
        self.run = os.urandom(4).hex()
        self.workers: list[asyncio.subprocess.Process] = []
        self.sink = Sink()
        self.producer: AIOKafkaProducer | None = None

    @property
    def pids(self) -> dict[str, int]:
        return {f"relay-{hop}": worker.pid for hop, worker in enumerate(self.workers)}

    @property
    def groups(self) -> dict[str, list[str]]:
        return {group(self.run, hop): [topic(hop)] for hop in range(HOPS)}

    async def start(self) -> None:
        from devstack import kafka

        await asyncio.to_thread(kafka.create_topics, self.bootstrap, topic_specs(), self.admin)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, **self.bench.env(), "PYTHONUNBUFFERED": "1"}
        self.logs.mkdir(parents=True, exist_ok=True)
        for hop in range(HOPS):
            with open(self.logs / f"bench-relay-{hop}.log", "ab") as log:
                self.workers.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "tools.bench_relay", self.run, str(hop), cwd=self.repo_root, env=env,
                    stdout=log, stderr=log))
        await self.sink.start(self.bootstrap, self.bench)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                                         linger_ms=5, **self.bench.client_options())
        await self.producer.start()

    async def warm_up(self, count: int = 600, timeout: float = 90.0) -> bool:
        """Three seconds of records through all hops before anything is measured: every relay has joined
        its group, and its start-up (imports, first connections, metadata) is behind it."""
        await send_open_loop(self.producer, topic(0), RelayRecords(-1, count), rate=200)
        return await self.sink.wait_for(lambda: len(self.arrivals(-1)) >= count, timeout)

    async def send(self, step: int, count: int, rate: float) -> Schedule:
        return await send_open_loop(self.producer, topic(0), RelayRecords(step, count), rate)

    def arrivals(self, step: int) -> dict[int, float]:
        return self.sink.arrived.get(step, {})

    async def stop(self) -> None:
        if self.producer:
            await self.producer.stop()
        await self.sink.stop()
        for worker in self.workers:
            if worker.returncode is None:
                worker.terminate()
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.wait(), 20)
            except TimeoutError:
                worker.kill()
                await worker.wait()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.admin.client_options())
        await admin.start()
        try:
            await admin.delete_topics([spec.name for spec in topic_specs()])
        finally:
            await admin.close()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
