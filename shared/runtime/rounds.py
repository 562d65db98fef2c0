"""Worker rounds that work what the consume step handed over at once and claim due rows on a schedule.

Approval's payment verifier and payout's executor both take rows two ways: handed
over in memory by the consume step that recorded them (claimed already, at
insert), and claimed from the table (retries, exits, re-routes, leases run out,
another replica's leftovers). A round that has handed rows works them and runs no
claim query: it would find nothing. Otherwise it claims once a second, at once
after a claim that came back full (there may be more), and at once when its owner
says rows were written unclaimed (`wake(index, claim=True)`).
"""

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger()


class ClaimRounds:
    """`count` rounds; round `index` waits on its own wake-up, so an owner can wake only the rounds
    its rows are for (approval's per-gateway lanes)."""

    def __init__(self, count: int, *, claim_size: int, claim_every_seconds: float = 1.0) -> None:
        self.claim_size = claim_size
        self.claim_every_seconds = claim_every_seconds
        self._wakes = [asyncio.Event() for _ in range(count)]
        self._claim_now = [False] * count

    def wake(self, index: int, *, claim: bool = False) -> None:
        """A waiting round looks at once, a busy one when its work is done; with `claim`, its next look
        claims even before its schedule says so."""
        self._claim_now[index] = self._claim_now[index] or claim
        self._wakes[index].set()

    def wake_all(self, *, claim: bool = False) -> None:
        for index in range(len(self._wakes)):
            self.wake(index, claim=claim)

    async def run(self, index: int, work: Callable[[bool], Awaitable[int]], handed: Callable[[], bool],
                  *, failed: str, **log_fields: object) -> None:
        """Round `index` until cancelled: `work(claim)` does one round (handed rows first, else due rows
        claimed if `claim`) and returns the rows it took; `handed()` says whether handed rows wait. A
        failing round is logged as `failed` and tried again a second later."""
        loop = asyncio.get_running_loop()
        wake = self._wakes[index]
        claim_at = 0.0
        while True:
            try:
                # Cleared before the round, not after an empty one: a wake-up while `work` runs (after its
                # claim read the table) would otherwise be cleared unseen, and its rows wait a whole second.
                wake.clear()
                claim = not handed() and (self._take_claim_now(index) or loop.time() >= claim_at)
                done = await work(claim)
                if claim:
                    claim_at = loop.time() + (0.0 if done >= self.claim_size else self.claim_every_seconds)
                if not done:
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=max(0.0, claim_at - loop.time()))
                    except TimeoutError:
                        pass
            except Exception:
                log.exception(failed, **log_fields)
                await asyncio.sleep(1.0)

    def _take_claim_now(self, index: int) -> bool:
        due, self._claim_now[index] = self._claim_now[index], False
        return due
