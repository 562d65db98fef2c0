"""What the intake HTTP tests share: API keys made through the store, and intake's outcome topics."""

import time
from collections import defaultdict

import asyncpg

from services.intake import store
from services.intake.credentials import NewApiKey
from shared.contract import topics
from tests.integration.helpers import TopicTail


async def new_api_key(dsn: str, source: str, **options) -> NewApiKey:
    """A key for `source`, made the way the keys CLI makes one."""
    conn = await asyncpg.connect(dsn)
    try:
        return await store.create_api_key(conn, source, **options)
    finally:
        await conn.close()


def auth(key: NewApiKey | str) -> dict[str, str]:
    return {"Authorization": f"Bearer {getattr(key, 'key', key)}"}


class OutcomeTail(TopicTail):
    """Reads refunds.accepted and refunds.rejected from their end at creation, per refund_id."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap, topics.ACCEPTED, topics.REJECTED)
        self.events: dict[str, list[dict]] = defaultdict(list)

    async def wait_for_outcomes(self, refund_ids, count: int = 1, timeout: float = 60.0) -> dict[str, list[dict]]:
        """Until each refund has at least `count` outcome events; the events seen, per refund."""
        wanted = set(refund_ids)
        deadline = time.monotonic() + timeout
        while any(len(self.events[r]) < count for r in wanted):
            if time.monotonic() > deadline:
                missing = sorted(r for r in wanted if len(self.events[r]) < count)
                raise AssertionError(f"{len(missing)} refunds lack an outcome after {timeout}s: {missing[:5]}")
            for event in await self._poll():
                self.events[event["data"]["refund_id"]].append(event)
        return {r: self.events[r] for r in wanted}
