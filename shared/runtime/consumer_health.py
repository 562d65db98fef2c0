"""Whether a stage is still consuming: a consumer can drop out of its group (or its loop can hang)
while the HTTP API answers and the broker answers pings, so health looks at the consumer itself.

aiokafka's fetcher stamps each assigned partition whenever a fetch for it returns, and it fetches a
partition again only once the loop has taken what was fetched before. So an idle but healthy
consumer keeps fresh stamps (its fetches long-poll and return), while a loop that stopped taking
records, a fetcher that died or a broker it cannot reach leaves them stale. A consumer with no
partitions at all counts as stalled from the moment it lost them.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import Gauge

from shared.runtime.periodic import every

LAST_POLL_AGE = Gauge(
    "refund_consumer_last_poll_age_seconds",
    "Seconds since the stalest assigned partition was last fetched (or since the group gave it none)",
    ["group"])


@dataclass
class ConsumerHealth:
    """Readiness and liveness of a service's consumers, from their partitions' last fetch."""

    subscribers: Sequence  # FastStream Kafka subscribers (their `.consumer` is aiokafka's, once started)
    ready_within_seconds: float
    live_within_seconds: float
    clock: Callable[[], float] = time.time
    _since: dict[str, tuple[frozenset, float]] = field(default_factory=dict)

    def ages(self) -> dict[str, float]:
        """Per consumer group: seconds since it last fetched, exported as a gauge."""
        found = {}
        for subscriber in self.subscribers:
            group = subscriber.group_id
            found[group] = self._age(group, subscriber.consumer, getattr(subscriber, "held", False))
            LAST_POLL_AGE.labels(group).set(found[group])
        return found

    def _age(self, group: str, consumer, held: bool = False) -> float:
        now = self.clock()
        if held:  # paused on purpose (the dead-letter breaker, which alerts on its own): not stalled
            self._since.pop(group, None)
            return 0.0
        assignment = frozenset(consumer.assignment()) if consumer is not None else frozenset()
        previous = self._since.get(group)
        if previous is None or previous[0] != assignment:
            self._since[group] = previous = (assignment, now)  # a new assignment starts its own clock
        if not assignment:
            return now - previous[1]
        stamps = [consumer.last_poll_timestamp(tp) for tp in assignment]
        # A partition not fetched yet since its assignment counts from the assignment.
        oldest = min(stamp / 1000 if stamp is not None else previous[1] for stamp in stamps)
        return max(now - max(oldest, previous[1]), 0.0)

    async def export_forever(self, interval: float = 5.0) -> None:
        async def export() -> None:
            self.ages()

        await every(interval, export, name="consumer_health")

    def ready(self) -> bool:
        return all(age <= self.ready_within_seconds for age in self.ages().values())

    def live(self) -> bool:
        return all(age <= self.live_within_seconds for age in self.ages().values())
