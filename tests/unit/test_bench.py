"""`make bench`'s arithmetic: percentiles, output rates, CPU from /proc, and that its requests are ones the
policy approves without a person (else the bench would measure a review queue)."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

from services.approval.domain import CustomerHistory, decide
from services.approval.policy import load_policy
from shared.contract.events import RefundAccepted, RefundRequested
from tools.bench import MilestoneFollower, bench_request, cpu_per_unit, summarise
from tools.bench_measure import (
    CLOCK_TICKS, CpuSample, MachineCpu, ProcStat, backend_cpu_ms_by_role, backend_ticks, cpu_ms_between, group_lag, machine_busy_share, output_rate,
    parse_machine_cpu, parse_proc_stat, percentile, tree_ticks,
)

ROOT = Path(__file__).resolve().parents[2]


def test_percentiles_interpolate_between_closest_ranks():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 5.0
    assert percentile(values, 95) == pytest.approx(4.8)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_output_rate_leaves_the_first_latency_out():
    # 11 events one tenth of a second apart, the first after a 3 s latency: 10 intervals in 1 s.
    assert output_rate([3.0 + i / 10 for i in range(11)]) == pytest.approx(10.0)
    assert output_rate([1.0]) == 0.0 and output_rate([]) == 0.0


def _stat(pid: int, comm: str, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    return f"{pid} ({comm}) S {ppid} 1 1 0 -1 4194560 10 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 1 0 100"


def test_proc_stat_fields_are_read_after_the_command_name():
    stat = parse_proc_stat(_stat(42, "postgres: refund_intake (idle) x", 7, utime=120, stime=30, cutime=5, cstime=1))
    assert (stat.pid, stat.ppid, stat.ticks, stat.child_ticks) == (42, 7, 150, 6)


def test_a_process_tree_counts_its_live_descendants_and_what_they_reaped():
    stats = {s.pid: s for s in map(parse_proc_stat, [
        _stat(10, "postgres", 1, 100, 50, cutime=30),  # a backend that exited earlier: in cutime
        _stat(11, "postgres: writer", 10, 5, 5),
        _stat(12, "postgres: backend", 10, 20, 10, cutime=2, cstime=1),
        _stat(13, "grandchild", 12, 1, 1),
        _stat(20, "java", 1, 900, 100),
    ])}
    assert tree_ticks(10, stats) == 150 + 30 + 10 + 33 + 2
    assert tree_ticks(10, stats, exclude=frozenset({12})) == 150 + 30 + 10  # 12 and its child count as 12
    assert tree_ticks(99, stats) == 0


def test_machine_cpu_counts_busy_states_and_not_idle_or_iowait():
    cpu = parse_machine_cpu("cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n")
    assert cpu == MachineCpu(busy=100 + 5 + 50 + 3 + 2 + 1, total=161 + 1000 + 20)


def test_cpu_between_two_samples_in_milliseconds():
    before = CpuSample({"kafka": 100, "intake": 10}, MachineCpu(busy=1000, total=4000))
    after = CpuSample({"kafka": 100 + CLOCK_TICKS, "intake": 5}, MachineCpu(busy=1000 + 2 * CLOCK_TICKS,
                                                                           total=4000 + 4 * CLOCK_TICKS))
    used = cpu_ms_between(before, after)
    assert used == {"kafka": 1000.0, "intake": 0.0, "machine": 2000.0}  # a restarted process never goes negative
    assert machine_busy_share(before, after) == 0.5


def test_postgres_cpu_by_role_counts_each_backend_since_the_first_snapshot_or_its_start():
    def stats(**ticks: int) -> dict[int, ProcStat]:
        return {int(pid[1:]): ProcStat(int(pid[1:]), 1, t, 0) for pid, t in ticks.items()}

    before = backend_ticks({10: "refund_payout", 11: "gateway_sim", 12: "refund_payout", 99: "refund_notify"},
                           stats(p10=100, p11=50, p12=7))  # 99 is in pg_stat_activity but already gone from /proc
    assert before == {10: ("refund_payout", 100), 11: ("gateway_sim", 50), 12: ("refund_payout", 7)}
    # 12 exited in between; 13 connected within the step; 11's pid now belongs to another role's backend
    after = backend_ticks({10: "refund_payout", 11: "refund_notify", 13: "refund_payout"},
                          stats(p10=100 + CLOCK_TICKS, p11=60, p13=CLOCK_TICKS // 2))
    used = backend_cpu_ms_by_role(before, after)
    assert used == {"refund_payout": 1000.0 + ticks_ms(CLOCK_TICKS // 2), "refund_notify": ticks_ms(60)}


def ticks_ms(ticks: int) -> float:
    return ticks * 1000 / CLOCK_TICKS


def test_cpu_per_refund_sums_the_stack_and_takes_the_idle_machine_off():
    per = cpu_per_unit({"kafka": 300.0, "intake": 100.0, "bench": 50.0, "machine": 1000.0}, units=10,
                       window_s=2.0, idle_ms_per_s={"machine": 100.0, "kafka": 50.0})
    assert per["stack"] == 40.0  # kafka + intake, not the load generator
    assert per["stack above idle"] == 30.0
    assert per["machine above idle"] == 80.0
    assert per["intake"] == 10.0
    assert "stack without simulator" not in per  # the relay's run has no simulator


def test_cpu_per_refund_without_the_simulator_takes_only_its_process_off():
    per = cpu_per_unit({"kafka": 300.0, "gatewaysim": 120.0, "intake": 100.0, "bench": 50.0, "machine": 1000.0},
                       units=10, window_s=2.0, idle_ms_per_s={})
    assert per["stack"] == 52.0
    assert per["stack without simulator"] == 40.0


def test_group_lag_sums_uncommitted_records_over_partitions():
    end = {TopicPartition("t", 0): 10, TopicPartition("t", 1): 7, TopicPartition("u", 0): 3}
    committed = {TopicPartition("t", 0): OffsetAndMetadata(8, ""), TopicPartition("t", 1): OffsetAndMetadata(7, "")}
    assert group_lag(end, committed) == 2 + 0 + 3


def test_a_refund_seen_first_as_reconciled_has_reached_every_milestone():
    follower = MilestoneFollower("unused:9092")
    follower.applied("rf_1", {"status": "reconciled"}, 5.0)
    follower.applied("rf_2", {"status": "accepted"}, 1.0)
    follower.applied("rf_2", {"status": "failed"}, 2.0)
    assert {m: sorted(r) for m, r in follower.reached.items()} == {
        "accepted": ["rf_1", "rf_2"], "succeeded": ["rf_1"], "reconciled": ["rf_1"], "outcome": ["rf_1", "rf_2"]}
    assert follower.reached["accepted"]["rf_2"] == 1.0


def test_bench_requests_are_valid_and_approved_without_a_person():
    data = bench_request("run1", "r50-7")
    request = RefundRequested.model_validate(data)
    assert isinstance(request.amount.value, int) and request.amount == request.payment.captured
    now = datetime.now(UTC)
    accepted = RefundAccepted.model_validate({
        **{k: data[k] for k in ("request_id", "order_id", "payment", "customer", "region", "reason", "amount")},
        "refund_id": "rf_1", "source": "bench-platform", "channel": data["payment"]["channel"],
        "requested_at": now, "accepted_at": now})
    verdict = decide(load_policy(ROOT / "deploy" / "policy" / "refund-policy.yaml"), accepted, CustomerHistory(),
                     dispute_open=False)
    assert (verdict.action, verdict.rule_ids) == ("approve", ("auto-approve-standard",))


def test_preload_chunks_cover_the_range_in_whole_reports():
    from tools.bench_preload import REPORT_LINES, chunks, reports_in

    assert list(chunks(0, 1000)) == []
    assert list(chunks(1000, 400)) == [(0, 400), (400, 800), (800, 1000)]
    assert list(chunks(250, 150)) == [(0, 200), (200, 250)]  # rounded up to whole reports
    assert list(chunks(50, 1)) == [(0, 50)]
    assert all(lo % REPORT_LINES == 0 for lo, _ in chunks(1_000_000, 200_000))
    assert reports_in(0, 200) == 2 and reports_in(200, 250) == 1


def test_seq_scan_deltas_keep_scanned_tables_most_rows_first():
    from tools.bench_preload import seq_scan_deltas

    before = {"a.x": (1, 100), "a.y": (5, 10), "a.z": (0, 0)}
    after = {"a.x": (3, 2_100), "a.y": (5, 10), "a.z": (4, 40), "a.new": (1, 1)}
    assert list(seq_scan_deltas(before, after).items()) == [
        ("a.x", {"seq_scan": 2, "seq_tup_read": 2_000}), ("a.z", {"seq_scan": 4, "seq_tup_read": 40}),
        ("a.new", {"seq_scan": 1, "seq_tup_read": 1})]


def test_summary_compares_cpu_with_the_relay_at_each_rate_both_kept_up_with():
    def step(rate, kept_up, stack_ms):
        return {"offered_per_s": rate, "kept_up": kept_up, "succeeded": {"per_s": rate * 0.98},
                "cpu_ms_per_refund": {"stack": stack_ms}}

    relay = {"max_kept_up_per_s": 1000, "steps": [
        {"offered_per_s": rate, "kept_up": True, "per_s": rate, "cpu_ms_per_message": {"stack": ms}}
        for rate, ms in ((100, 4.0), (200, 2.5), (1000, 1.0))]}
    summary = summarise({"steps": [step(100, True, 16.0), step(200, True, 10.0), step(400, False, 8.0)],
                         "relay": relay})
    assert summary["cpu_ratio_at_rate"] == {100: 4.0, 200: 4.0}  # 400/s: the pipeline fell behind
    assert summary["cpu_ratio"] == 10.0  # each at its highest rate kept up: 200/s against 1000/s
    assert summary["pipeline_relay_ratio"] == 0.2
