"""The broker restarts under load: every stage resumes consuming within a bound, nothing is lost,
nothing is paid twice, and every service is ready again."""

import asyncio
import time

import httpx
import pytest

from tests.integration.helpers import publish, refund_of, valid_request
from tests.integration.money_checks import assert_every_refund_terminal_and_paid_at_most_once

pytestmark = pytest.mark.integration
SERVICES = ("intake", "approval", "payout", "reconcile", "notify")
RESUME_WITHIN_SECONDS = 90


async def _ready(stack, name: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=3) as http:
            return (await http.get(f"{stack.service_url(name)}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_every_stage_resumes_after_a_broker_restart_under_load(stack, producer, status_feed, db):
    before = [valid_request(amount=200 + i, captured=200 + i) for i in range(60)]
    after = [valid_request(amount=300 + i, captured=300 + i) for i in range(60)]
    for request in before:
        await publish(producer, request)
    # Restart while the stages are mid-flow (some refunds done, most not).
    first = {refund_of(r) for r in before}
    assert await status_feed.wait_for(lambda: len(first & status_feed.terminal_at.keys()) >= 5, timeout=60)
    await asyncio.to_thread(stack.restart, "kafka")
    restarted_at = time.monotonic()

    for request in after:  # the producer reconnects by itself
        await publish(producer, request)
    while not all([await _ready(stack, name) for name in SERVICES]):
        assert time.monotonic() - restarted_at < RESUME_WITHIN_SECONDS, \
            {name: await _ready(stack, name) for name in SERVICES}
        await asyncio.sleep(1)

    expected = first | {refund_of(r) for r in after}
    await assert_every_refund_terminal_and_paid_at_most_once(status_feed, db, expected, timeout=180)
