"""Consumer lag of a stage's consumer group: records on its topics it has not committed yet.

FastStream's Prometheus middleware counts messages but exports no lag, so each
service measures its own group with an admin client (committed offsets) and a
group-less consumer (log end offsets), every `consumer_lag_interval_seconds`.
"""

from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Gauge

from shared.runtime.kafka_auth import KafkaAuth
from shared.runtime.periodic import every

log = structlog.get_logger()

CONSUMER_LAG = Gauge("refund_consumer_lag_records", "Records on a topic not yet committed by the consumer group",
                     ["group", "topic"])


def lag_by_topic(end: dict, committed: dict) -> dict[str, int]:
    """Sum over partitions of log end minus committed offset (nothing committed = everything is lag)."""
    lag: dict[str, int] = {}
    for tp, end_offset in end.items():
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag[tp.topic] = lag.get(tp.topic, 0) + max(end_offset - done, 0)
    return lag


async def lag_forever(bootstrap: str, group: str, topics: Sequence[str], interval: float,
                      auth: KafkaAuth | None = None) -> None:
    options = (auth or KafkaAuth()).client_options()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{group}-lag", **options)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id=f"{group}-lag", enable_auto_commit=False,
                                **options)
    await admin.start()
    await consumer.start()
    try:
        async def measure() -> None:
            partitions = [TopicPartition(t["topic"], p["partition"])
                          for t in await admin.describe_topics(list(topics)) for p in t["partitions"]]
            end = await consumer.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(group)
            for topic, lag in lag_by_topic(end, committed).items():
                CONSUMER_LAG.labels(group, topic).set(lag)

        await every(interval, measure, name="consumer_lag")
    finally:
        await consumer.stop()
        await admin.close()

