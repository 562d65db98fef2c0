"""Pure parts of issue 6: drill marking, the fast rules variant, the Prometheus scrape config, SLA buckets."""

from pathlib import Path

import yaml

from devstack.prometheus import fast_rules, write_config
from services.intake.domain import DRILL_SOURCE, is_drill
from services.notify.watch import RANK, STAGE_AFTER
from shared.contract.events import RefundRequested
from shared.runtime.metrics import STAGE_DURATION
from services.intake.sla import STAGES, load
from tests.integration.helpers import valid_request

ROOT = Path(__file__).resolve().parents[2]


def test_a_drill_is_marked_by_metadata_only():
    drills = frozenset({DRILL_SOURCE})
    assert is_drill(RefundRequested.model_validate(valid_request(metadata={"drill": "true"})), DRILL_SOURCE, drills)
    assert not is_drill(RefundRequested.model_validate(valid_request(metadata={"drill": "no"})), DRILL_SOURCE, drills)
    assert not is_drill(RefundRequested.model_validate(valid_request()), DRILL_SOURCE, drills)


def test_fast_rules_changes_only_for_durations(tmp_path):
    real = yaml.safe_load((ROOT / "deploy/prometheus/rules.yml").read_text())
    fast = yaml.safe_load(fast_rules(ROOT / "deploy/prometheus/rules.yml", tmp_path / "r.yml", "5s").read_text())
    for real_group, fast_group in zip(real["groups"], fast["groups"], strict=True):
        for a, b in zip(real_group["rules"], fast_group["rules"], strict=True):
            assert b.get("for") == ("5s" if "for" in a else None)
            assert {k: v for k, v in a.items() if k != "for"} == {k: v for k, v in b.items() if k != "for"}


def test_scrape_config_has_one_job_per_service_with_every_instance(tmp_path):
    write_config(tmp_path / "p.yml", {"approval": 8001, "payout": 8002, "payout@2": 8003}, rule_files=[],
                 scrape_interval="1s", evaluation_interval="1s")
    jobs = {job["job_name"]: job["static_configs"][0]["targets"]
            for job in yaml.safe_load((tmp_path / "p.yml").read_text())["scrape_configs"]}
    assert jobs == {"refund-approval": ["127.0.0.1:8001"], "refund-payout": ["127.0.0.1:8002", "127.0.0.1:8003"]}


def test_duration_buckets_have_an_edge_at_every_sla_budget():
    table = load(ROOT / "deploy/sla.yaml")
    budgets = {b.total_seconds() for o in [table.default, *(o.stages for o in table.overrides)]
               for b in o.given().values()}
    assert budgets - set(STAGE_DURATION._upper_bounds) == set()


def test_watch_knows_every_lifecycle_stage_in_order():
    assert [s for s in STAGES if s in RANK] == ["approval", "payout", "reconcile"]
    assert set(STAGE_AFTER.values()) <= set(RANK)


def test_lag_sums_partitions_and_counts_uncommitted_partitions_whole():
    from aiokafka import TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    from shared.runtime.lag import lag_by_topic

    end = {TopicPartition("a", 0): 10, TopicPartition("a", 1): 7, TopicPartition("b", 0): 3}
    committed = {TopicPartition("a", 0): OffsetAndMetadata(4, ""), TopicPartition("b", 0): OffsetAndMetadata(3, "")}
    assert lag_by_topic(end, committed) == {"a": 6 + 7, "b": 0}
