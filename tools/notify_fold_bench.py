"""Time notify's consume step, the per-event fold it had against the batch fold it has, on the same
synthetic lifecycle events in one transaction each, and check both leave the same projection.

    .venv/bin/python -m tools.notify_fold_bench [--events 2000] [--rounds 3] [--old-rev 9a253e0]

Against DATABASE_URL if set; otherwise it starts the test PostgreSQL (.run/test, as the integration
tests do), and stops and removes it afterwards. Either way it applies notify's migrations and empties
notify's tables before each round. The old fold is read from git (`--old-rev`, the last commit with the
per-event fold) and runs as it was, on the same connection type and pool settings.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import types
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from cloudevents.core.v1.event import CloudEvent

from devstack import postgres
from devstack.processes import free_port
from services.notify import domain, watch
from services.notify.handlers import Audience, Projection
from shared import contact_seal
from shared.db import apply_migrations, create_pool
from shared.stage import Inbound

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "services" / "notify" / "migrations"
AUDIENCE = Audience(email=True, sms=True, webhook_urls={"shop-bench": "https://shop.example/hooks"})
# Per refund, as a poll brings them: its lifecycle, a re-sent accepted and paid, and a late approved.
LIFECYCLE = ("accepted", "approved", "accepted", "payout-submitted", "paid", "paid", "approved", "reconciled")
COMPARED = ("refund_id", "status", "request_id", "source", "order_id", "amount", "channel", "reason_codes", "eta",
            "customer", "drill", "deadlines", "stage", "stage_rank", "accepted_at", "sequence")


def synthetic_events(count: int) -> list[Inbound]:
    """`count` lifecycle events of count/8 refunds, interleaved as consecutive polls of ten topics bring them."""
    public = contact_seal.public_key(contact_seal.LOCAL_PUBLIC_KEY)
    now = datetime.now(UTC)
    refunds = []
    for n in range(-(-count // len(LIFECYCLE))):
        refund_id, customer_id = f"rf_{uuid.uuid4().hex}", f"cus-{n}"
        sealed = contact_seal.seal(public, {"email": f"c{n}@example.com", "phone": "+4915112345678"},
                                   refund_id=refund_id, customer_id=customer_id)
        ticket = {"refund_id": refund_id, "request_id": f"req-{n}", "source": "shop-bench", "order_id": f"ord-{n}",
                  "amount": {"value": 2500 + n, "currency": "EUR"}, "channel": "card", "region": "DE",
                  "reason_codes": [], "drill": False}
        accepted = {**ticket, "customer": {"id": customer_id, "locale": "en", "contact_sealed": sealed},
                    "accepted_at": now.isoformat(), "deadlines": {"approval": (now + timedelta(hours=1)).isoformat()}}
        data = {"accepted": accepted, "approved": {**accepted, "policy_version": "v1", "approved_at": now.isoformat()},
                "payout-submitted": {**ticket, "gateway": "sim", "payout_id": f"po-{n}",
                                     "submitted_at": now.isoformat()},
                "paid": {**ticket, "gateway": "sim", "payout_id": f"po-{n}", "gateway_ref": f"g-{n}",
                         "paid_at": now.isoformat(), "eta": (now + timedelta(days=3)).isoformat()},
                "reconciled": {**ticket, "gateway_ref": f"g-{n}", "settled_amount": ticket["amount"],
                               "reconciled_at": now.isoformat()}}
        refunds.append([(kind, data[kind]) for kind in LIFECYCLE])
    # Step by step through every refund's lifecycle, as many refunds in flight at once would arrive.
    events = [refund[step] for step in range(len(LIFECYCLE)) for refund in refunds][:count]
    return [Inbound(None, CloudEvent(attributes={"id": str(uuid.uuid4()), "source": "refund-pipeline/bench",
                                                 "type": f"refund.{kind}.v1", "specversion": "1.0", "time": now},
                                     data=data)) for kind, data in events]


def per_event_fold(rev: str, contact_key) -> Projection:
    """The per-event `Projection.project` as it was at `rev`, with the store and the metric call it had."""
    old = types.ModuleType("notify_handlers_before")
    exec(compile(_at(rev, "services/notify/handlers.py"), f"{rev}:services/notify/handlers.py", "exec"), old.__dict__)
    old_store = types.ModuleType("notify_store_before")
    exec(compile(_at(rev, "services/notify/store.py"), f"{rev}:services/notify/store.py", "exec"), old_store.__dict__)
    # Its watch module would register the same metrics again: the same histogram, under its old signature.
    old.store = old_store
    old.watch = types.SimpleNamespace(STAGE_AFTER=watch.STAGE_AFTER, RANK=watch.RANK, observe_time_to_funds=(
        lambda event_type, data, row: watch.observe_time_to_funds(domain.Folded(
            domain.LifecycleEvent(event_type, data),
            domain.StatusRow(row["refund_id"], accepted_at=row["accepted_at"], drill=row["drill"])))))
    return old.Projection(old.Audience(AUDIENCE.email, AUDIENCE.sms, AUDIENCE.webhook_urls), contact_key)


def _at(rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


class Counted:
    """A connection that counts the statements sent through it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn, self.statements = conn, 0

    def __getattr__(self, name: str):
        attribute = getattr(self._conn, name)
        if name in ("fetch", "fetchrow", "fetchval", "execute", "executemany"):
            self.statements += 1
        return attribute


async def one_round(pool: asyncpg.Pool, fold, events: list[Inbound], batch: int) -> tuple[float, int, list, list, int]:
    """`events` folded on emptied tables, `batch` of them per transaction: the time it took, the statements,
    the rows and queued notifications it left, and how many status records it published."""
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE notify.refund_status, notify.notifications")
        counted = Counted(conn)
        published = []
        started = time.perf_counter()
        for start in range(0, len(events), batch):
            async with conn.transaction():
                published += await fold(counted, events[start:start + batch])
        elapsed = time.perf_counter() - started
        rows = await conn.fetch(f"SELECT {', '.join(COMPARED)}, array(SELECT jsonb_object_keys(timeline) ORDER BY 1) "
                                "AS timeline FROM notify.refund_status ORDER BY refund_id")
        queued = await conn.fetch("SELECT refund_id, milestone, channel, recipient, locale, context - 'eta' AS context "
                                  "FROM notify.notifications ORDER BY refund_id, milestone, channel")
    return elapsed, counted.statements, [dict(r) for r in rows], [dict(r) for r in queued], len(published)


async def bench(dsn: str, count: int, rounds: int, rev: str, batch: int) -> None:
    await apply_migrations(dsn, "notify", MIGRATIONS)
    key = contact_seal.private_key(contact_seal.LOCAL_PRIVATE_KEY)
    old, new = per_event_fold(rev, key), Projection(AUDIENCE, key)

    async def per_event(conn, events):
        published = []
        for item in events:
            published += await old.project(conn, item)
        return published

    folds = {f"per event ({rev})": per_event, "batch (this tree)": new.fold_batch}
    events = synthetic_events(count)
    pool = await create_pool(dsn, max_size=2)
    try:
        for size in dict.fromkeys((len(events), batch)):
            if not await _compare(pool, folds, events, rounds, size):
                sys.exit(1)
    finally:
        await pool.close()


async def _compare(pool: asyncpg.Pool, folds: dict, events: list[Inbound], rounds: int, batch: int) -> bool:
    results: dict[str, list] = {name: [] for name in folds}
    for _ in range(rounds):
        for name, fold in folds.items():  # alternating, so neither always runs on a warmer cache
            results[name].append(await one_round(pool, fold, events, batch))
    print(f"{len(events)} events, {len({i.event.get_data()['refund_id'] for i in events})} refunds, "
          f"{batch} events per transaction, {rounds} rounds:")
    for name, runs in results.items():
        times = [run[0] for run in runs]
        print(f"  {name:<32} median {statistics.median(times) * 1000:8.1f} ms  "
              f"(rounds: {', '.join(f'{t * 1000:.1f}' for t in times)} ms)  "
              f"statements {runs[0][1]}, status records {runs[0][4]}, rows {len(runs[0][2])}, "
              f"notifications {len(runs[0][3])}")
    (_, _, old_rows, old_queued, _), (_, _, new_rows, new_queued, _) = (runs[-1] for runs in results.values())
    same = old_rows == new_rows and old_queued == new_queued
    print("  same projection and queue:", "yes" if same else "NO")
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500, help="events per transaction in the second comparison "
                        "(notify's BATCH_MAX_RECORDS), where later batches fold onto existing rows")
    parser.add_argument("--old-rev", default="9a253e0", help="a commit with the per-event fold")
    args = parser.parse_args()
    if dsn := os.environ.get("DATABASE_URL"):
        asyncio.run(bench(dsn, args.events, args.rounds, args.old_rev, args.batch))
        return
    root = postgres.pg_root(ROOT / ".run" / "test")
    if postgres.running_pid(root) is not None:
        sys.exit(f"the test PostgreSQL in {root} is running (integration tests?): set DATABASE_URL to use it")
    port = free_port()
    pid = postgres.start(root, port)
    try:
        dsn = postgres.wait_ready(postgres.configured_port(root) or port, root)
        asyncio.run(bench(dsn, args.events, args.rounds, args.old_rev, args.batch))
    finally:
        postgres.stop(root, pid, remove=True)


if __name__ == "__main__":
    main()
