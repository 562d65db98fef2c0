"""A stage that stops consuming while its HTTP API, database and broker all answer is not ready
(and, past the second bound, not alive), exports how long it has not fetched, and recovers."""

import asyncio

import httpx
import pytest

from tests.integration.helpers import publish, refund_of, valid_request, wait_until
from tests.integration.service_fixtures import service_configured

pytestmark = pytest.mark.integration


async def _probe(url: str) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        return (await http.get(url)).status_code


async def _last_poll_age(url: str) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        metrics = (await http.get(f"{url}/metrics")).text
    line = next(line for line in metrics.splitlines()
                if line.startswith('refund_consumer_last_poll_age_seconds{group="refund-approval"}'))
    return float(line.rsplit(" ", 1)[1])


async def test_a_stage_whose_consumer_stalls_is_not_ready_then_not_live_and_recovers(
        stack, producer, status_feed, db):
    with service_configured(stack, "approval", CONSUMER_READY_WITHIN_SECONDS="4",
                            CONSUMER_LIVE_WITHIN_SECONDS="12"):
        url = stack.service_url("approval")
        assert await _probe(f"{url}/readyz") == 200
        requests = [valid_request(amount=100 + i, captured=100 + i) for i in range(30)]

        async def trickle():  # records keep arriving for approval's partitions while its batch hangs
            for request in requests:
                await publish(producer, request)
                await asyncio.sleep(0.5)

        # Approval's next batch blocks on its inbox: its loop stops taking records, nothing else fails.
        blocker = db.transaction()
        await blocker.start()
        await db.execute("LOCK TABLE approval.inbox IN ACCESS EXCLUSIVE MODE")
        sending = asyncio.create_task(trickle())
        try:
            await wait_until(lambda: _is(f"{url}/readyz", 503), timeout=30)
            assert await _probe(f"{url}/metrics") == 200  # the API still answers
            await wait_until(lambda: _is(f"{url}/healthz", 503), timeout=30)
            assert await _last_poll_age(url) > 4
        finally:
            await blocker.rollback()
            await sending

        await wait_until(lambda: _is(f"{url}/readyz", 200), timeout=30)
        assert await _probe(f"{url}/healthz") == 200
        expected = {refund_of(r) for r in requests}
        assert await status_feed.wait_for(lambda: expected <= status_feed.terminal_at.keys(), timeout=120)


async def _is(url: str, code: int) -> bool:
    return await _probe(url) == code
