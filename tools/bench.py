"""`make bench`: how many refunds a second the pipeline keeps up with, and what each one costs.

On the local stack (brought up if needed, as the demo does), for each offered rate in turn it makes the
customers' payments at the gateway simulator (before the timed part), then publishes valid refund
requests that the policy approves without a person (card, US, a few USD, one customer each) open-loop
at that fixed rate for `--duration` seconds, and follows `refunds.status` until each refund is terminal.
Per step it prints the throughput to `succeeded` and to `reconciled`, the latency percentiles from
publish to accepted / succeeded / reconciled, the worst consumer lag per group, CPU ms per refund per
process (and of the whole machine) and each process's RSS; it stops stepping up once a step falls
behind. In the same run a raw aiokafka 5-hop relay on the same broker (tools/bench_relay.py) gives the
yardstick: the rate plain Kafka consume->produce hops keep up with here, and their CPU per message.
Figures are also written as JSON to .run/bench/<timestamp>.json.

`succeeded` is event-driven from end to end. `reconciled` is not: reconcile pulls the gateway's
settlement report every RECONCILE_REPORT_PULL_SECONDS, and the simulator's Stripe-shaped report holds
lines only up to two seconds ago, so publish->reconciled is bounded below by that schedule.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from devstack.roles import SIMULATOR_SCHEMA
from shared.contract import topics
from shared.contract.events import Status
from shared.contract.ids import refund_id_for
from shared.runtime.kafka_auth import SERVICE_READS, KafkaAuth
from shared.contract.lifecycle import TERMINAL_STATUSES
from tools.bench_load import LagProbe, StepWatch, send_open_loop
from tools.bench_preload import (DEFAULT_CHUNK, preload_sql, seq_scan_deltas, seq_scan_snapshot, wal_per_unit,
                                 wal_snapshot)
from tools.bench_measure import (
    CpuSample,
    backend_cpu_ms_by_role,
    backend_ticks,
    cpu_ms_between,
    machine_busy_share,
    output_rate,
    percentile,
    read_processes,
)
from tools.bench_relay import HOPS, Relay
from tools.platform import GatewayPayments, StatusFollower, requested_record, start_producer

console = Console(width=None if sys.stdout.isatty() else 132)
SOURCE = "bench-platform"
QUANTILES = (50, 95, 99)
# A step keeps up when refunds come out at >= this share of the offered rate and all end within --drain.
KEEP_UP_SHARE = 0.9
_PAST_SUCCEEDED = frozenset({Status.SUCCEEDED, Status.DISCREPANCY, Status.RECONCILED, Status.REVERSED})
# When a refund first reached each milestone on the feed (None: any status counts). A refund may skip a
# status on the feed (notify publishes its latest), so a later status reaches the earlier milestones too.
MILESTONES: dict[str, frozenset[str] | None] = {
    "accepted": None,
    "succeeded": _PAST_SUCCEEDED,
    "reconciled": frozenset({Status.RECONCILED}),
    "outcome": _PAST_SUCCEEDED | TERMINAL_STATUSES,  # the payout's outcome (or an earlier end)
}


def bench_request(run: str, n: str) -> dict:
    """A valid request that deploy/policy/refund-policy.yaml approves without a person: a full card refund
    of a few USD in the US (`auto-approve-standard`), a customer of its own (no velocity or history
    hold), reason not `fraudulent`, captured yesterday (inside the card window), on the routed `sim`."""
    value = 1_000 + zlib.crc32(n.encode()) % 4_000
    return {
        "request_id": f"bench-{run}-{n}", "order_id": f"ord-bench-{run}-{n}",
        "payment": {"id": f"pi_bench_{run}_{n}", "gateway": "sim", "channel": "card",
                    "captured": {"value": value, "currency": "USD"},
                    "captured_at": (datetime.now(UTC) - timedelta(days=1)).isoformat()},
        "amount": {"value": value, "currency": "USD"},
        "customer": {"id": f"cus-bench-{run}-{n}", "locale": "en"},
        "region": "US", "reason": "returned", "requested_at": datetime.now(UTC).isoformat(),
        "metadata": {"bench_run": run},
    }


@dataclass
class MilestoneFollower(StatusFollower):
    """The platform's status follower (sequence drop rule included), noting when each refund first
    reached each milestone."""

    reached: dict[str, dict[str, float]] = field(default_factory=lambda: {m: {} for m in MILESTONES})

    def applied(self, refund_id: str, data: dict, received_at: float) -> None:
        for milestone, statuses in MILESTONES.items():
            if statuses is None or data["status"] in statuses:
                self.reached[milestone].setdefault(refund_id, received_at)


@dataclass
class Batch:
    requests: list[dict]
    records: list
    refund_ids: list[str]


def make_batch(run: str, label: str, count: int) -> Batch:
    requests = [bench_request(run, f"{label}-{i}") for i in range(count)]
    records = [(r["request_id"].encode(), *requested_record(SOURCE, r)) for r in requests]
    return Batch(requests, records, [refund_id_for(SOURCE, r["request_id"]) for r in requests])


async def make_payments(payments: GatewayPayments, requests: list[dict], concurrency: int = 32) -> float:
    """Each request's payment at the simulator, `concurrency` at a time (it has no bulk endpoint)."""
    started, gate = time.monotonic(), asyncio.Semaphore(concurrency)

    async def one(request: dict) -> None:
        async with gate:
            await payments.ensure(request)

    await asyncio.gather(*(one(r) for r in requests))
    return time.monotonic() - started


def _quantiles(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}": percentile(values, q) for q in QUANTILES}


# Not the system under test: the load generator and the metrics scraper.
NOT_MEASURED = frozenset({"bench", "prometheus", "machine"})
# Under test, but in production the gateway's own CPU, not the pipeline's (its SQL still counts in postgres).
SIMULATOR = "gatewaysim"
# The PostgreSQL role the simulator logs in as: `pipeline alone` takes its backends' CPU off too.
SIMULATOR_ROLE = SIMULATOR_SCHEMA


def cpu_per_unit(cpu_ms: dict[str, float], units: int, window_s: float, idle_ms_per_s: dict[str, float]) -> dict:
    """CPU ms per refund (or message) per process; `stack` sums the processes under test, `stack without
    simulator` all but the gateway simulator's own process (a step adds `pipeline alone`: that, less the
    CPU of the simulator's PostgreSQL backends); `… above idle` takes off what each used per second before
    any load (polls, sweeps; for the machine: other tenants too)."""
    per = {name: ms / units for name, ms in cpu_ms.items()}
    tested = [name for name in cpu_ms if name not in NOT_MEASURED]
    per["stack"] = sum(cpu_ms[name] for name in tested) / units
    if SIMULATOR in cpu_ms:
        per["stack without simulator"] = per["stack"] - per[SIMULATOR]
    per["stack above idle"] = sum(cpu_ms[name] - idle_ms_per_s.get(name, 0.0) * window_s for name in tested) / units
    if "machine" in idle_ms_per_s:
        per["machine above idle"] = (cpu_ms["machine"] - idle_ms_per_s["machine"] * window_s) / units
    return per


@dataclass
class Bench:
    """One bench run on a stack: its clients, the idle baseline, and each phase."""

    stack: object
    duration: float
    drain: float
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    follower: MilestoneFollower | None = None
    producer: object = None
    payments: GatewayPayments | None = None
    probe: LagProbe | None = None
    idle_ms_per_s: dict[str, float] = field(default_factory=dict)

    async def db_counters(self) -> tuple[dict[str, tuple[int, int]], dict[str, int], dict[int, tuple[str, int]]]:
        """(seq_scan, seq_tup_read) per table of the pipeline's schemas, the cluster's WAL counters, and
        each client backend's role and CPU ticks so far, as the superuser sees them."""
        import asyncpg

        conn = await asyncpg.connect(self.stack.dsn)
        try:
            roles = {r["pid"]: r["usename"] for r in await conn.fetch(
                "SELECT pid, usename FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND usename IS NOT NULL AND pid <> pg_backend_pid()")}
            backends = backend_ticks(roles, read_processes())
            return await seq_scan_snapshot(conn), await wal_snapshot(conn), backends
        finally:
            await conn.close()

    # ---------------------------------------------------------------- processes
    def processes(self) -> dict[str, int]:
        """Every process of the stack by name (postgres: the postmaster, its backends counted under it)."""
        from devstack import postgres

        state = self.stack.state
        found = {"kafka": (state.get("kafka") or {}).get("pid"),
                 "postgres": postgres.running_pid(postgres.pg_root(self.stack.run_dir)),
                 **{name: record.get("pid") for name, record in state["services"].items()},
                 "prometheus": (state.get("prometheus") or {}).get("pid"), "bench": os.getpid()}
        return {name: pid for name, pid in found.items() if pid}

    def groups(self) -> dict[str, list[str]]:
        return {f"refund-{service}": sorted(reads) for service, reads in SERVICE_READS.items()}

    def rss_pids(self) -> dict[str, int]:
        return {name: pid for name, pid in self.processes().items() if name not in ("postgres", "prometheus")}

    def report_pull_seconds(self) -> float:
        """reconcile's RECONCILE_REPORT_PULL_SECONDS as its process was started with (service default 60)."""
        pid = self.processes().get("reconcile")
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return float("nan")
        values = [e.split(b"=", 1)[1] for e in environ if e.startswith(b"RECONCILE_REPORT_PULL_SECONDS=")]
        return float(values[0]) if values else 60.0

    # ------------------------------------------------------------------- phases
    async def start(self) -> None:
        bootstrap = self.stack.bootstrap
        self.follower = MilestoneFollower(bootstrap)
        await self.follower.start()
        self.producer = await start_producer(bootstrap)
        self.payments = GatewayPayments(self.stack.gateway_routes())
        self.probe = LagProbe(bootstrap, KafkaAuth.from_env("KAFKA_OPS_"))
        await self.probe.start()

    async def stop(self) -> None:
        for closer in (self.producer and self.producer.stop, self.follower and self.follower.stop,
                       self.probe and self.probe.stop):
            if closer:
                await closer()

    async def idle(self, seconds: float) -> dict[str, float]:
        """CPU ms per second each process uses with nothing to do (polls, sweeps, lag gauges, report pulls)."""
        before = CpuSample.take(self.processes())
        await asyncio.sleep(seconds)
        used = cpu_ms_between(before, CpuSample.take(self.processes()))
        self.idle_ms_per_s = {name: ms / seconds for name, ms in used.items()}
        return self.idle_ms_per_s

    async def preload(self, count: int, rate: float) -> dict:
        """`count` refunds through the whole pipeline before measuring, so the tables hold that history."""
        batch = make_batch(self.run, "preload", count)
        console.print(f"[bold]preload[/]: making {count} payments at the simulator…")
        await make_payments(self.payments, batch.requests)
        started = time.monotonic()
        console.print(f"[bold]preload[/]: publishing {count} requests at {rate:g}/s, waiting until all are terminal…")
        await send_open_loop(self.producer, topics.REQUESTED, batch.records, rate)
        ids = set(batch.refund_ids)
        done = lambda: len(ids & self.follower.terminal_at.keys())  # noqa: E731
        deadline = time.monotonic() + count / 10 + 120
        while done() < count and time.monotonic() < deadline:
            await self.follower.wait_for(lambda: done() >= count, timeout=5)
            console.print(f"  preload: {done()}/{count} terminal after {time.monotonic() - started:.0f}s")
        return {"refunds": count, "rate": rate, "terminal": done(), "seconds": time.monotonic() - started}

    async def step(self, rate: float) -> dict:
        count = max(int(round(rate * self.duration)), 2)
        batch = make_batch(self.run, f"r{rate:g}", count)
        payment_s = await make_payments(self.payments, batch.requests)
        ids = set(batch.refund_ids)
        watch = StepWatch(self.probe, self.groups(), self.rss_pids())
        scans_before, wal_before, backends_before = await self.db_counters()
        before = CpuSample.take(self.processes())
        async with watch.running():
            schedule = await send_open_loop(self.producer, topics.REQUESTED, batch.records, rate)
            sent_at = time.monotonic()
            drained = await self.follower.wait_for(lambda: ids <= self.follower.terminal_at.keys(), self.drain)
            drained_at = time.monotonic()
        after = CpuSample.take(self.processes())
        scans_after, wal_after, backends_after = await self.db_counters()
        scans = seq_scan_deltas(scans_before, scans_after)
        due = dict(zip(batch.refund_ids, schedule.due, strict=True))
        result: dict = {"offered_per_s": rate, "refunds": count, "payments_made_s": round(payment_s, 2),
                        "send_seconds": sent_at - schedule.due[0], "sender_worst_slip_s": schedule.worst_slip,
                        "drained": drained, "drain_s": drained_at - sent_at,
                        "window_s": drained_at - schedule.due[0]}
        for milestone, reached in self.follower.reached.items():
            times = {r: reached[r] for r in ids if r in reached}
            result[milestone] = {"refunds": len(times), "per_s": output_rate(times.values()),
                                 "latency_s": _quantiles([t - due[r] for r, t in times.items()])}
        succeeded, reconciled = self.follower.reached["succeeded"], self.follower.reached["reconciled"]
        result["succeeded_to_reconciled_s"] = _quantiles([reconciled[r] - succeeded[r] for r in ids
                                                          if r in reconciled and r in succeeded])
        result["final_status"] = dict(Counter(self.follower.status_of(r) or "none" for r in ids))
        result["max_lag"] = watch.max_lag
        result["rss_mb"] = watch.max_rss_mb
        cpu = cpu_ms_between(before, after)
        result["cpu_ms"] = cpu
        result["cpu_ms_per_refund"] = cpu_per_unit(cpu, count, result["window_s"], self.idle_ms_per_s)
        result["machine_busy_share"] = machine_busy_share(before, after)
        result["wal_per_refund"] = wal_per_unit(wal_before, wal_after, count)
        by_role = {role: ms / count for role, ms in sorted(backend_cpu_ms_by_role(backends_before, backends_after).items())}
        result["postgres_cpu_ms_per_refund_by_role"] = by_role
        per = result["cpu_ms_per_refund"]
        if "stack without simulator" in per and SIMULATOR_ROLE in by_role:
            per["pipeline alone"] = per["stack without simulator"] - by_role[SIMULATOR_ROLE]
        result["seq_scans"] = scans  # pg_stat_user_tables deltas over the step (tables scanned only)
        result["behind_because"] = _behind(drained, self.drain, result["outcome"]["per_s"], rate)
        result["kept_up"] = not result["behind_because"]
        return result

    async def relay_steps(self, rates: list[float]) -> dict:
        """The raw 5-hop relay at each rate until one falls behind."""
        relay = Relay(self.stack.bootstrap, self.stack.kafka_auth("admin"), self.stack.kafka_auth("bench"),
                      self.stack.logs_dir, self.stack.repo_root)
        steps: list[dict] = []
        # Its own probe, stopped before the topics go: a client that once asked for a topic's offsets
        # keeps it in its metadata and logs every refresh after the topic is deleted.
        probe = LagProbe(self.stack.bootstrap, KafkaAuth.from_env("KAFKA_OPS_"))
        try:
            await probe.start()
            await relay.start()
            if not await relay.warm_up():
                console.print("[red]relay[/]: the warm-up records did not come through all hops in time")
                return {"steps": steps, "error": "warm-up did not come through"}
            for n, rate in enumerate(rates):
                count = max(int(round(rate * self.duration)), 2)
                roots = {**relay.pids, "kafka": self.processes()["kafka"], "bench": os.getpid()}
                watch = StepWatch(probe, relay.groups, {**relay.pids, "kafka": roots["kafka"]})
                before = CpuSample.take(roots)
                async with watch.running():
                    schedule = await relay.send(n, count, rate)
                    sent_at = time.monotonic()
                    drained = await relay.sink.wait_for(lambda: len(relay.arrivals(n)) >= count, self.drain)
                    drained_at = time.monotonic()
                after = CpuSample.take(roots)
                arrived = relay.arrivals(n)
                cpu = cpu_ms_between(before, after)
                relays = sum(ms for name, ms in cpu.items() if name.startswith("relay-"))
                window = drained_at - schedule.due[0]
                step = {"offered_per_s": rate, "messages": count, "delivered": len(arrived),
                        "per_s": output_rate(arrived.values()), "sender_worst_slip_s": schedule.worst_slip,
                        "drained": drained, "drain_s": drained_at - sent_at,
                        "latency_s": _quantiles([at - schedule.due[i] for i, at in arrived.items()]),
                        "max_lag": watch.max_lag, "rss_mb": watch.max_rss_mb, "cpu_ms": cpu,
                        "cpu_ms_per_message": {"relays": relays / count,
                                               **cpu_per_unit(cpu, count, window, self.idle_ms_per_s)},
                        "machine_busy_share": machine_busy_share(before, after)}
                step["behind_because"] = _behind(drained, self.drain, step["per_s"], rate)
                step["kept_up"] = not step["behind_because"]
                steps.append(step)
                _print_relay_step(step)
                if not step["kept_up"]:
                    break
        finally:
            await probe.stop()
            await relay.stop()
        kept = [s for s in steps if s["kept_up"]]
        return {"hops": HOPS, "steps": steps, "max_kept_up_per_s": max((s["offered_per_s"] for s in kept), default=0)}


def _behind(drained: bool, drain: float, out_per_s: float, offered: float) -> list[str]:
    """Why a step did not keep up (empty: it did)."""
    why = [] if drained else [f"not all through {drain:g}s after the last send"]
    if out_per_s < KEEP_UP_SHARE * offered:
        why.append(f"{out_per_s:.1f}/s out < {KEEP_UP_SHARE:.0%} of {offered:g}/s offered")
    return why


# ------------------------------------------------------------------------- printing
def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f}"


def _print_step(step: dict) -> None:
    s, r = step["succeeded"], step["reconciled"]
    console.print(
        f"[bold]{step['offered_per_s']:g}/s[/] x {step['refunds']}: succeeded {s['per_s']:.1f}/s "
        f"(p50 {_ms(s['latency_s']['p50'])} ms, p99 {_ms(s['latency_s']['p99'])} ms), reconciled {r['per_s']:.1f}/s "
        f"(p50 {_ms(r['latency_s']['p50'])} ms), machine {step['cpu_ms_per_refund']['machine']:.1f} ms CPU/refund, "
        f"{'[green]kept up[/]' if step['kept_up'] else '[red]fell behind[/]: ' + '; '.join(step['behind_because'])}"
        + ("" if step["drained"] else " (its backlog is still being worked off)"))


def _print_preload_sql(done: dict) -> None:
    rate = done["loaded"] / done["insert_s"] if done["loaded"] and done["insert_s"] else 0.0
    console.print(f"[bold]preload-sql[/]: {done['loaded']:,} refunds written ({done['skipped']:,} there already) in "
                  f"{done['insert_s']:.0f}s ({rate:,.0f}/s), ANALYZE {done['analyze_s']:.0f}s, {done['seconds']:.0f}s in all")
    table = Table(title="Rows per table after the preload (pg_class.reltuples after ANALYZE)")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("insert s", justify="right")
    for name, rows in done["row_counts"].items():
        table.add_row(name, f"{rows:,}", f"{done['per_table_s'].get(name, 0):.1f}" if name in done["per_table_s"] else "")
    console.print(table)


def _print_relay_step(step: dict) -> None:
    console.print(
        f"[bold]relay {step['offered_per_s']:g}/s[/] x {step['messages']}: {step['per_s']:.0f}/s out, "
        f"p50 {_ms(step['latency_s']['p50'])} ms, p99 {_ms(step['latency_s']['p99'])} ms, "
        f"relays {step['cpu_ms_per_message']['relays']:.3f} + kafka {step['cpu_ms_per_message']['kafka']:.3f} ms "
        f"CPU/msg, {'[green]kept up[/]' if step['kept_up'] else '[red]fell behind[/]: ' + '; '.join(step['behind_because'])}")


def _table(title: str, first: str, steps: list[dict], rows: list[tuple[str, callable]],
           last: tuple[str, dict[str, str]] | None = None) -> Table:
    """One column per step; `last` is an extra column (its title, and its cell by row label)."""
    table = Table(title=title)
    table.add_column(first)
    for step in steps:
        table.add_column(f"{step['offered_per_s']:g}/s", justify="right")
    if last:
        table.add_column(last[0], justify="right")
    for label, cell in rows:
        table.add_row(label, *(cell(step) for step in steps), *([last[1].get(label, "")] if last else []))
    return table


def print_summary(report: dict) -> None:
    steps = report["steps"]
    if steps:
        def lat(milestone: str):
            return lambda s: " / ".join(_ms(s[milestone]["latency_s"][f"p{q}"]) for q in QUANTILES)
        rows = [("refunds sent", lambda s: str(s["refunds"])),
                ("sender worst slip ms", lambda s: _ms(s["sender_worst_slip_s"])),
                ("succeeded /s", lambda s: f"{s['succeeded']['per_s']:.1f}"),
                ("reconciled /s", lambda s: f"{s['reconciled']['per_s']:.1f}")]
        rows += [(f"publish->{m} p50/p95/p99 ms", lat(m)) for m in ("accepted", "succeeded", "reconciled")]
        rows += [("succeeded->reconciled p50 ms", lambda s: _ms(s["succeeded_to_reconciled_s"]["p50"])),
                 ("final statuses", lambda s: ", ".join(f"{k} {v}" for k, v in sorted(s["final_status"].items()))),
                 ("kept up", lambda s: "yes" if s["kept_up"] else "[red]no[/]")]
        console.print(_table("Pipeline steps (open loop)", "", steps, rows))
        groups = sorted({g for s in steps for g in s["max_lag"]})
        console.print(_table("Max consumer lag during the step (records)", "group", steps,
                             [(g, lambda s, g=g: str(s["max_lag"].get(g, "-"))) for g in groups]))
        names = list(steps[0]["cpu_ms_per_refund"])
        idle = {n: f"{v:.1f}" for n, v in report.get("idle_cpu_ms_per_s", {}).items()}
        console.print(_table("CPU ms per refund, per process tree (idle: CPU ms per second with no load)",
                             "process", steps,
                             [(n, lambda s, n=n: f"{s['cpu_ms_per_refund'].get(n, 0):.2f}") for n in names]
                             + [("machine busy %", lambda s: f"{s['machine_busy_share'] * 100:.0f}")],
                             last=("idle ms/s", idle)))

        roles = sorted({r for s in steps for r in s.get("postgres_cpu_ms_per_refund_by_role", {})})
        if roles:
            console.print(_table("PostgreSQL CPU ms per refund, by the role its client backends log in as "
                                 "(backends that exited within the step are only in `postgres` above)", "role", steps,
                                 [(r, lambda s, r=r: f"{s['postgres_cpu_ms_per_refund_by_role'].get(r, 0):.2f}")
                                  for r in roles]))

        def wal(key: str, fmt: str):
            return lambda s: fmt.format(s["wal_per_refund"][key]) if "wal_per_refund" in s else "-"
        console.print(_table("WAL per refund (pg_stat_wal, simulator included)", "", steps,
                             [("kB", wal("kb", "{:.1f}")), ("records", wal("records", "{:.0f}")),
                              ("full-page images", wal("fpi", "{:.1f}"))]))
        scanned = sorted({t for s in steps for t in s.get("seq_scans", {})},
                         key=lambda t: -max(s.get("seq_scans", {}).get(t, {}).get("seq_tup_read", 0) for s in steps))
        if scanned:
            console.print(_table("Sequential scans during the step (pg_stat_user_tables: scans / rows read)", "table",
                                 steps, [(t, lambda s, t=t: "{seq_scan} / {seq_tup_read:,}".format(
                                     **s["seq_scans"].get(t, {"seq_scan": 0, "seq_tup_read": 0}))) for t in scanned]))
        procs = sorted({n for s in steps for n in s["rss_mb"]})
        console.print(_table("Max RSS during the step (MB)", "process", steps,
                             [(n, lambda s, n=n: f"{s['rss_mb'].get(n, 0):.0f}") for n in procs]))
    summary = report["summary"]
    console.print(f"machine: {report['cpus']} CPUs, load average {report['loadavg_at_start'][0]:.1f} at the start and "
                  f"{report['loadavg_at_end'][0]:.1f} at the end; `machine` rows include other tenants' CPU, "
                  "`stack` rows only the stack's processes.")
    console.print(f"reconcile pulls settlement reports every {report['report_pull_seconds']:g} s "
                  "(RECONCILE_REPORT_PULL_SECONDS) and the simulator's report holds lines up to 2 s ago: "
                  "publish->reconciled is scheduled, publish->succeeded is not.")
    console.print(f"[bold]pipeline[/]: kept up with {summary['pipeline_max_kept_up_per_s']:g} refunds/s offered "
                  f"(best succeeded throughput {summary['pipeline_best_succeeded_per_s']:.1f}/s)"
                  + ("" if steps and not steps[-1]["kept_up"] else " (the highest rate tried: raise --rates)"))
    if "relay" in report:
        relay = report["relay"]
        if relay.get("steps"):
            console.print(_table(f"Raw aiokafka {HOPS}-hop relay (same broker)", "", relay["steps"], [
                ("delivered /s", lambda s: f"{s['per_s']:.0f}"),
                ("e2e p50 ms", lambda s: _ms(s["latency_s"]["p50"])),
                ("e2e p99 ms", lambda s: _ms(s["latency_s"]["p99"])),
                ("max hop lag", lambda s: str(max(s["max_lag"].values(), default=0))),
                *((f"{n} CPU ms/msg", lambda s, n=n: f"{s['cpu_ms_per_message'].get(n, 0):.3f}")
                  for n in ("relays", "kafka", "stack", "stack above idle", "bench", "machine", "machine above idle")),
                ("kept up", lambda s: "yes" if s["kept_up"] else "[red]no[/]")]))
        console.print(f"[bold]relay[/]: kept up with {relay.get('max_kept_up_per_s', 0):g} msg/s offered"
                      + ("" if relay.get("steps") and not relay["steps"][-1]["kept_up"]
                         else " (the highest rate tried: raise --relay-rates to find its limit)"))
        if summary.get("pipeline_relay_ratio") is not None:
            console.print(f"[bold]pipeline / relay[/]: {summary['pipeline_relay_ratio']:.3f} of the rate kept up with "
                          f"({summary['best_output_ratio']:.3f} of the best output rate: "
                          f"{summary['pipeline_best_succeeded_per_s']:.1f} refunds/s vs {summary['relay_best_per_s']:.0f} msg/s); "
                          f"CPU of the processes under test per refund / per relayed message: "
                          f"{summary['cpu_ratio']:.0f}x (each at its highest rate kept up; per-message cost falls as batches grow "
                          "with the rate, see the tables)")
        if summary.get("cpu_ratio_at_rate"):
            console.print("[bold]pipeline / relay at the same offered rate[/] (CPU per refund / per relayed message): "
                          + ", ".join(f"{rate:g}/s {ratio:.1f}x" for rate, ratio in summary["cpu_ratio_at_rate"].items()))


def summarise(report: dict) -> dict:
    steps, kept = report["steps"], [s for s in report["steps"] if s["kept_up"]]
    summary = {"pipeline_max_kept_up_per_s": max((s["offered_per_s"] for s in kept), default=0),
               "pipeline_best_succeeded_per_s": max((s["succeeded"]["per_s"] for s in steps), default=0.0)}
    relay = report.get("relay") or {}
    relay_kept = [s for s in relay.get("steps", []) if s["kept_up"]]
    if relay.get("steps"):
        summary["relay_best_per_s"] = max(s["per_s"] for s in relay["steps"])
        summary["best_output_ratio"] = summary["pipeline_best_succeeded_per_s"] / max(summary["relay_best_per_s"], 1e-9)
    if kept and relay_kept:
        summary["pipeline_relay_ratio"] = summary["pipeline_max_kept_up_per_s"] / relay["max_kept_up_per_s"]
        # What the processes under test used: every stack process per refund, relays + Kafka per message.
        summary["cpu_ratio"] = (kept[-1]["cpu_ms_per_refund"]["stack"]
                                / max(relay_kept[-1]["cpu_ms_per_message"]["stack"], 1e-9))
    # The fair comparison: per refund and per relayed message at one offered rate, where batches are alike.
    relay_at = {s["offered_per_s"]: s for s in relay_kept}
    summary["cpu_ratio_at_rate"] = {
        step["offered_per_s"]: step["cpu_ms_per_refund"]["stack"]
        / max(relay_at[step["offered_per_s"]]["cpu_ms_per_message"]["stack"], 1e-9)
        for step in kept if step["offered_per_s"] in relay_at}
    return summary


# --------------------------------------------------------------------------- main
async def _run(stack, rates: list[float], relay_rates: list[float], duration: float, drain: float,
               skip_relay: bool, preload: int, preload_rate: float, idle_s: float, preload_sql_n: int = 0,
               preload_chunk: int = DEFAULT_CHUNK) -> dict:
    bench = Bench(stack, duration, drain)
    report: dict = {"started_at": datetime.now(UTC).isoformat(), "run": bench.run, "cpus": os.cpu_count(),
                    "loadavg_at_start": os.getloadavg(), "duration_s": duration, "drain_s": drain,
                    "rates": rates, "report_pull_seconds": bench.report_pull_seconds(), "steps": []}
    if preload_sql_n:
        # Before the idle baseline: ANALYZE and the checkpoint after a bulk write are not idle.
        report["preload_sql"] = await preload_sql(stack.dsn, preload_sql_n, console, preload_chunk)
        _print_preload_sql(report["preload_sql"])
    await bench.start()
    try:
        report["idle_cpu_ms_per_s"] = await bench.idle(idle_s)
        if not skip_relay:
            # First, on a quiet pipeline: a pipeline step that fell behind leaves a backlog being worked off.
            console.print(f"[bold]relay[/]: raw aiokafka {HOPS}-hop relay at {', '.join(f'{r:g}' for r in relay_rates)}/s")
            report["relay"] = await bench.relay_steps(relay_rates)
        if preload:
            report["preload"] = await bench.preload(preload, preload_rate)
        for rate in rates:
            step = await bench.step(rate)
            report["steps"].append(step)
            _print_step(step)
            if not step["kept_up"]:
                break
    finally:
        await bench.stop()
    report["loadavg_at_end"] = os.getloadavg()
    report["summary"] = summarise(report)
    return report


def _rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main(
    rates: str = typer.Option("50,100,200,400,800", help="offered refunds/s per step, stepped up in order"),
    duration: float = typer.Option(20.0, help="seconds each step sends for"),
    drain: float = typer.Option(30.0, help="seconds after a step's last send for all its refunds to be terminal"),
    relay_rates: str = typer.Option("50,100,200,500,1000,2000,4000,8000", help="offered messages/s of the raw relay"),
    skip_relay: bool = typer.Option(False, "--skip-relay", help="do not run the raw Kafka relay"),
    preload: int = typer.Option(0, help="refunds pushed through the pipeline first (history in the tables)"),
    preload_rate: float = typer.Option(200.0, help="offered refunds/s of the preload"),
    preload_sql_n: int = typer.Option(0, "--preload-sql", help="reconciled refunds' history bulk-inserted with SQL "
                                      "first (tools/bench_preload.py; a chunk already there is skipped)"),
    preload_chunk: int = typer.Option(DEFAULT_CHUNK, help="refunds per --preload-sql transaction"),
    idle: float = typer.Option(5.0, help="seconds of idle CPU baseline before the steps"),
) -> None:
    from devstack import Stack

    stack = Stack(run_dir=Path(os.environ.get("REFUND_RUN_DIR", ".run/dev")))
    stack.up()
    os.environ.update(stack.env())  # the address, the demo platform's and the operator's Kafka credentials
    report = asyncio.run(_run(stack, _rates(rates), _rates(relay_rates), duration, drain, skip_relay, preload,
                              preload_rate, idle, preload_sql_n, preload_chunk))
    print_summary(report)
    out = stack.repo_root / ".run" / "bench" / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    console.print(f"figures written to {out}")


if __name__ == "__main__":
    typer.run(main)
