"""`make demo`: a realistic mixed batch of refunds through the whole pipeline.

Brings the local stack up if needed, publishes requests the way a platform
would (channels, regions, currencies incl. JPY and KWD, partial refunds,
duplicates, invalid and unreadable messages) at a steady rate, follows
`refunds.status` until every refund is terminal, and prints what happened.
Exits non-zero if any refund is not terminal by the deadline.
"""

import asyncio
import os
import random
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.contract import topics
from shared.contract.events import Reason
from shared.contract.ids import refund_id_for
from tools.platform import GatewayPayments, StatusFollower, requested_record, start_producer
from tools.reviewers import DemoReviewers

console = Console()
REGIONS = [  # (region, currency, captured range in minor units, channels)
    ("US", "USD", (500, 90_000), ["card", "paypal", "wallet"]),
    ("DE", "EUR", (500, 60_000), ["card", "paypal", "bank_transfer"]),
    ("FR", "EUR", (500, 60_000), ["card", "wallet"]),
    ("GB", "GBP", (500, 50_000), ["card", "paypal"]),
    ("JP", "JPY", (300, 120_000), ["card", "wallet"]),
    ("KW", "KWD", (1_000, 150_000), ["card", "bank_transfer"]),
    ("CN", "CNY", (1_000, 500_000), ["alipay", "wechat_pay"]),
    ("BR", "BRL", (1_000, 200_000), ["card", "bank_transfer"]),
]
SOURCES = ["shop-eu", "shop-us", "marketplace-apac", "billing-core"]
GATEWAYS = ["sim", "stripe", "adyen"]
REASONS = [reason.value for reason in Reason]


@dataclass
class Message:
    value: bytes
    headers: list[tuple[str, bytes]]
    key: bytes | None
    refund_id: str | None  # None: no refund can be named (unreadable bytes)
    kind: str
    request: dict | None = None  # what was sent, when it was a request (its payment is made at the gateway first)


def _request(rng: random.Random, run: str, n: int, payment: dict | None = None, amount: int | None = None) -> dict:
    region, currency, (low, high), channels = rng.choice(REGIONS)
    if payment is None:
        # Stripe-shaped (sim, stripe) and Adyen-shaped (adyen) gateways, all at the local simulator.
        payment = {"id": f"pay-{run}-{n}", "gateway": rng.choice(GATEWAYS), "channel": rng.choice(channels),
                   "captured": {"value": rng.randint(low, high), "currency": currency},
                   # Most captured within the refund windows; one in twenty outside the card window (review).
                   "captured_at": (datetime.now(UTC) - timedelta(days=200 if rng.random() < 0.05 else rng.randint(0, 60)))
                   .isoformat()}
    captured = payment["captured"]["value"]
    return {
        "request_id": f"req-{run}-{n}", "order_id": f"ord-{run}-{n}", "payment": payment,
        "amount": {"value": amount or (captured if rng.random() < 0.6 else rng.randint(1, captured)),
                   "currency": payment["captured"]["currency"]},
        "customer": {"id": f"cus-{rng.randint(1, 400)}", "email": f"c{n}@example.com",
                     "locale": rng.choice(["en", "zh-CN", "de-DE", "ja-JP"])},
        "region": region if payment["captured"]["currency"] == currency else "US",
        "reason": rng.choice(REASONS), "requested_at": datetime.now(UTC).isoformat(),
        "metadata": {"demo_run": run},
    }


_BREAKERS = [
    lambda d: d["amount"].update(value=float(d["amount"]["value"])),          # a float amount
    lambda d: d["amount"].update(currency="USD" if d["amount"]["currency"] != "USD" else "EUR"),
    lambda d: d.pop("order_id"),
    lambda d: d.update(region="XX"),
    lambda d: d["amount"].update(value=-d["amount"]["value"]),
    lambda d: d.update(reason="changed_my_mind", note="n" * 1200),
]


def build_batch(count: int, seed: int) -> list[Message]:
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    out: list[Message] = []

    def add(source: str, data: dict, kind: str, binary: bool = False) -> None:
        value, headers = requested_record(source, data, binary=binary)
        request_id = data.get("request_id")
        out.append(Message(value, headers, request_id.encode(), refund_id_for(source, request_id), kind, data))

    n = 0
    while len(out) < count:
        n += 1
        source = rng.choice(SOURCES)
        roll = rng.random()
        if roll < 0.04 and out:  # a platform re-sends an earlier request
            earlier = rng.choice([m for m in out if m.refund_id])
            out.append(Message(earlier.value, earlier.headers, earlier.key, earlier.refund_id, "duplicate"))
        elif roll < 0.08:
            data = _request(rng, run, n)
            rng.choice(_BREAKERS)(data)
            add(source, data, "invalid")
        elif roll < 0.085:
            out.append(Message(b"\x00\xffnot a cloudevent", [], None, None, "unreadable"))
        elif roll < 0.16:  # two or three partial refunds of one payment, the last may overdraw it
            first = _request(rng, run, n, amount=None)
            captured = first["payment"]["captured"]["value"]
            first["amount"]["value"] = max(1, captured // 3)
            add(source, first, "partial")
            for _ in range(rng.choice([1, 2])):
                n += 1
                add(source, _request(rng, run, n, payment=first["payment"],
                                     amount=max(1, captured // rng.choice([3, 2]))), "partial")
        else:
            add(source, _request(rng, run, n), "single", binary=rng.random() < 0.1)
    return out[:count]


async def _run(count: int, rate: float, deadline: float, seed: int, approval_url: str,
               gateway_routes: dict[str, dict]) -> int:
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    batch = build_batch(count, seed)
    desk, desk_stop = DemoReviewers(approval_url, seed), asyncio.Event()
    desk_task = asyncio.create_task(desk.work(desk_stop))
    expected = {m.refund_id for m in batch if m.refund_id}
    follower = StatusFollower(bootstrap)
    await follower.start()
    producer = await start_producer(bootstrap)
    payments = GatewayPayments(gateway_routes)
    sent_at: dict[str, float] = {}
    started = time.monotonic()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            publishing = progress.add_task("publishing requests", total=len(batch))
            terminal = progress.add_task("refunds terminal   ", total=len(expected))
            for i, message in enumerate(batch):
                due = started + i / rate
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                if message.request is not None:
                    await payments.ensure(message.request)
                await producer.send(topics.REQUESTED, message.value, key=message.key, headers=message.headers)
                if message.refund_id:
                    sent_at.setdefault(message.refund_id, time.monotonic())
                progress.update(publishing, completed=i + 1)
                progress.update(terminal, completed=len(expected & follower.terminal_at.keys()))
            await producer.flush()
            published = time.monotonic()
            give_up = published + deadline
            while time.monotonic() < give_up and not expected <= follower.terminal_at.keys():
                await follower.wait_for(lambda: expected <= follower.terminal_at.keys(), timeout=0.5)
                progress.update(terminal, completed=len(expected & follower.terminal_at.keys()))
    finally:
        desk_stop.set()
        await desk_task
        await producer.stop()
        await follower.stop()
    return _report(batch, expected, follower, sent_at, started, published, desk)


def _report(batch, expected, follower, sent_at, started, published, desk: DemoReviewers) -> int:
    done = expected & follower.terminal_at.keys()
    finals = Counter(follower.status_of(r) for r in done)
    kinds = Counter(m.kind for m in batch)
    table = Table(title="Final status per refund")
    table.add_column("status")
    table.add_column("refunds", justify="right")
    for status, n in finals.most_common():
        table.add_row(status, str(n))
    stuck = expected - done
    table.add_row("[red]not terminal[/red]" if stuck else "not terminal", str(len(stuck)))
    console.print(table)

    reasons = Counter(code for r in done if follower.status_of(r) in ("rejected", "failed")
                      for code in follower.latest[r].get("reason_codes") or ["(none)"])
    reason_table = Table(title="Rejected and failed: reason codes")
    reason_table.add_column("code")
    reason_table.add_column("count", justify="right")
    for code, n in reasons.most_common():
        reason_table.add_row(code, str(n))
    console.print(reason_table)

    desk_table = Table(title=f"Manual review desk: {len(desk.reviewed)} refunds decided by people")
    desk_table.add_column("decision")
    desk_table.add_column("count", justify="right")
    for decision, n in sorted(desk.decisions.items()):
        desk_table.add_row(decision, str(n))
    console.print(desk_table)

    latencies = sorted(follower.terminal_at[r] - sent_at[r] for r in done)
    last = max(follower.terminal_at[r] for r in done) if done else published
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    console.print(
        f"messages published: {len(batch)} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})\n"
        f"refunds: {len(expected)} distinct, {len(done)} terminal\n"
        f"publish rate: {len(batch) / (published - started):.0f} msg/s over {published - started:.1f} s\n"
        f"throughput end to end: {len(done) / (last - started):.0f} refunds/s "
        f"(first publish to last terminal status, {last - started:.1f} s)\n"
        f"end-to-end latency (publish -> terminal status): "
        f"p50 {q[49]:.3f} s, p95 {q[94]:.3f} s, p99 {q[98]:.3f} s, max {latencies[-1] if latencies else 0:.3f} s"
    )
    automatic = sorted(follower.terminal_at[r] - sent_at[r] for r in done - desk.reviewed)
    if len(automatic) >= 2:
        a = statistics.quantiles(automatic, n=100)
        console.print(f"without people in the loop ({len(automatic)} refunds): "
                      f"p50 {a[49]:.3f} s, p95 {a[94]:.3f} s, p99 {a[98]:.3f} s")
    if stuck:
        console.print(f"[red]{len(stuck)} refunds not terminal, e.g. "
                      f"{[(r, follower.status_of(r)) for r in sorted(stuck)[:5]]}[/red]")
        return 1
    return 0


def main(
    count: int = typer.Option(1000, help="messages to publish"),
    rate: float = typer.Option(300.0, help="messages per second to publish at"),
    deadline: float = typer.Option(120.0, help="seconds after the last publish to wait for terminal statuses"),
    seed: int = typer.Option(7, help="random seed of the batch"),
) -> None:
    from devstack import Stack

    stack = Stack(run_dir=Path(os.environ.get("REFUND_RUN_DIR", ".run/dev")))
    stack.up()
    os.environ.update(stack.env())  # the address and the demo platform's Kafka credentials
    code = asyncio.run(_run(count, rate, deadline, seed, stack.service_url("approval"), stack.gateway_routes()))
    print_console_sign_in(stack)
    raise typer.Exit(code)


def print_console_sign_in(stack) -> None:
    """Where the operations console runs and how to sign in to it locally (services/console)."""
    from devstack.stack import CONSOLE
    from services.console.auth import DEMO_USERS
    from services.console.settings import ConsoleSettings

    users = ", ".join(f"{name} ({'+'.join(role.value for role in roles)})" for name, roles in DEMO_USERS.items())
    console.print(f"\n[bold]operations console[/]: {stack.service_url(CONSOLE)}/signin\n"
                  f"  sign in as one of {users}\n"
                  f"  demo password: {ConsoleSettings().demo_password}")


if __name__ == "__main__":
    typer.run(main)
