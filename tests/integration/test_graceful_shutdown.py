"""SIGTERM mid-batch: the service drains, commits and exits inside its grace period; no refund lost or paid twice."""

import asyncio
import time

import pytest

from devstack.processes import pid_alive
from tests.integration.helpers import publish, refund_of, valid_request
from tests.integration.money_checks import assert_every_refund_terminal_and_paid_at_most_once

pytestmark = pytest.mark.integration
BATCH = 200
# Kubernetes' terminationGracePeriodSeconds for every service (deploy/k8s/base/*/deployment.yaml).
GRACE_SECONDS = 60


@pytest.mark.parametrize("victim", ["payout", "intake"])
async def test_sigterm_mid_batch_drains_and_loses_nothing(victim, stack, producer, status_feed, db):
    requests = [valid_request(amount=200 + i, captured=200 + i) for i in range(BATCH)]
    expected = {refund_of(r) for r in requests}
    log = stack.logs_dir / f"{victim}.log"
    log_offset = log.stat().st_size

    async def publish_all():
        await asyncio.gather(*(publish(producer, r) for r in requests))

    publishing = asyncio.create_task(publish_all())
    # Signal once the stage is demonstrably mid-batch: some refunds done, most not.
    assert await status_feed.wait_for(lambda: 5 <= len(expected & status_feed.terminal_at.keys()), timeout=60)
    pid = stack.state["services"][victim]["pid"]
    started = time.monotonic()
    stack.stop_service(victim, timeout=GRACE_SECONDS)  # SIGTERM; SIGKILL only after the grace period
    took = time.monotonic() - started
    assert not pid_alive(pid)
    assert took < GRACE_SECONDS, f"{victim} needed a SIGKILL after {took:.0f}s"
    with open(log, "rb") as fh:
        fh.seek(log_offset)
        shutdown = fh.read().decode(errors="replace")
    # It went through the graceful path (broker stopped, in-hand batch committed, pool closed).
    assert "service_stopping" in shutdown and "service_stopped" in shutdown, shutdown[-2000:]
    still_open = len(expected - status_feed.terminal_at.keys())
    assert still_open > 0, "the batch finished before the signal; the test proved nothing"

    await publishing
    stack.start_service(victim)
    await assert_every_refund_terminal_and_paid_at_most_once(status_feed, db, expected)
