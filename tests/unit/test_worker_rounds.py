"""When approval's verifier rounds and payout's executor rounds look for due rows: rows the consume
step handed over are claimed already, so working them must not cost a claim query; rows parked
unclaimed, and the once-a-second look for rows asked again (retries, exits, leases run out), still do."""

import asyncio
import collections
from types import SimpleNamespace

from services.approval.verification import PaymentVerifier
from services.payout.handlers import HandOff, PayoutExecutor
from services.payout.store import Claim


class CountingVerifier(PaymentVerifier):
    """The real round scheduling (`run_forever`, `_lane`); a round only counts what it would do."""

    def __init__(self, stage, decisions) -> None:
        super().__init__(stage, decisions, SimpleNamespace(readers={"sim": object()}), claim_size=16)
        self.claims: list[str | None] = []
        self.worked: list[str] = []

    async def run_once(self, gateway, *, claim=True) -> int:
        rows = self._handed(gateway)
        if not rows and claim:
            self.claims.append(gateway)
        self.worked += [row["refund_id"] for row in rows]
        return len(rows)


async def test_handed_rows_are_worked_at_once_without_a_claim_query_after_each_batch():
    stage = SimpleNamespace(committed=asyncio.Event(), pool=None)
    decisions = SimpleNamespace(handed=collections.defaultdict(collections.deque), parked_gateways=set())
    verifier = CountingVerifier(stage, decisions)
    task = asyncio.create_task(verifier.run_forever())
    try:
        await asyncio.sleep(0.05)
        assert sorted(verifier.claims, key=str) == [None, "sim"]  # each round looks once when it starts

        for batch in range(5):  # five committed batches hand rows over within half a second
            decisions.handed["sim"].append({"refund_id": f"rf-{batch}"})
            stage.committed.set()
            await asyncio.sleep(0.05)
        assert verifier.worked == [f"rf-{batch}" for batch in range(5)]
        assert sorted(verifier.claims, key=str) == [None, "sim"]  # none of them cost a claim

        decisions.parked_gateways.add("sim")  # a commit parked rows unclaimed: claimed at once
        stage.committed.set()
        await asyncio.sleep(0.05)
        assert verifier.claims.count("sim") == 2 and verifier.claims.count(None) == 1

        await asyncio.sleep(1.0)  # and every round still looks for due rows once a second
        assert verifier.claims.count("sim") == 3 and verifier.claims.count(None) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class CountingExecutor(PayoutExecutor):
    def __init__(self, stage, hand_off) -> None:
        super().__init__(stage, {}, reclaim_after_seconds=30, sla_seconds=60, concurrency=2, rounds=2,
                         hand_off=hand_off)
        self.claims = 0
        self.worked: list[str] = []

    async def run_once(self, *, claim=True) -> int:
        taken = await self._handed()
        if taken is None and claim:
            self.claims += 1
        self.worked += taken.refund_ids if taken else []
        return len(taken.rows) if taken else 0


async def test_intents_handed_over_are_paid_at_once_and_a_claim_query_runs_once_a_second_per_round():
    stage = SimpleNamespace(committed=asyncio.Event(), pool=None)
    hand_off = HandOff(lease_seconds=30, claim_size=2)
    executor = CountingExecutor(stage, hand_off)
    task = asyncio.create_task(executor.run_forever())
    try:
        await asyncio.sleep(0.05)
        assert executor.claims == 2  # each round looks once when it starts

        for batch in range(5):  # five committed batches of three intents within half a second
            hand_off.taking(Claim(f"token-{batch}", 30, [{"refund_id": f"rf-{batch}-{n}"} for n in range(3)]))
            hand_off.committed()
            stage.committed.set()  # the stage's own signal, as every commit sets it
            await asyncio.sleep(0.05)
        assert executor.worked == [f"rf-{batch}-{n}" for batch in range(5) for n in range(3)]
        assert executor.claims == 2  # none of them cost a claim

        hand_off.taking(Claim("rolled-back", 30, [{"refund_id": "rf-gone"}]))
        hand_off.rolled_back()  # its transaction rolled back: nothing to pay
        hand_off.committed()
        await asyncio.sleep(0.05)
        assert "rf-gone" not in executor.worked

        await asyncio.sleep(1.0)  # due rows no hand-off carries are still looked for once a second
        assert executor.claims == 4
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_full_claim_is_followed_by_another_at_once_and_a_failing_round_goes_on():
    """The shared scheduling itself: a claim that came back full claims again without waiting its
    second (there may be more due); one that came back short waits; a round that raised is retried."""
    from shared.runtime.rounds import ClaimRounds

    rounds = ClaimRounds(1, claim_size=4)
    due = [4, 4, 1]  # rows each claim finds
    claims: list[int] = []
    failed = []

    async def work(claim: bool) -> int:
        if not claim:
            return 0
        if not due:
            return 0
        found = due.pop(0)
        claims.append(found)
        if found == 1 and not failed:
            failed.append(True)
            raise RuntimeError("a bug in one round")
        return found

    task = asyncio.create_task(rounds.run(0, work, lambda: False, failed="test_round_failed"))
    try:
        await asyncio.sleep(0.1)
        assert claims == [4, 4, 1]  # two full claims, then a third at once
        due.append(2)
        await asyncio.sleep(0.5)
        assert claims == [4, 4, 1]  # failed: retried after a second, not at once
        await asyncio.sleep(1.0)
        assert claims == [4, 4, 1, 2]
        rounds.wake(0, claim=True)  # rows written unclaimed: claimed at once, not on schedule
        due.append(3)
        await asyncio.sleep(0.1)
        assert claims == [4, 4, 1, 2, 3]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
