"""The ticket's SLA table: durations, overrides per channel/region, cumulative deadlines, bad files."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.intake import sla

REPO_FILE = Path(__file__).resolve().parents[2] / "deploy" / "sla.yaml"
T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)

TABLE = sla.SlaTable.model_validate({
    "version": "t1",
    "default": {"intake": "30s", "approval": "4h", "payout": "1d", "reconcile": "2d", "notify": "15m"},
    "overrides": [
        {"channel": "bank_transfer", "stages": {"payout": "3d"}},
        {"region": "BR", "stages": {"approval": "2h", "payout": "2d"}},
        {"channel": "bank_transfer", "region": "BR", "stages": {"payout": "5d"}},
    ],
})


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("15m", 900), ("4h", 14400), ("2d", 172800), (" 1d ", 86400),
])
def test_durations(text, seconds):
    assert sla.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "4", "h", "0s", "1.5h", "-3h", "4 hours", "2w", 30, None])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="is not a duration"):
        sla.parse_duration(text)


@pytest.mark.parametrize(("channel", "region", "approval", "payout"), [
    ("card", "DE", "4h", "1d"),              # the default
    ("bank_transfer", "DE", "4h", "3d"),     # channel override
    ("card", "BR", "2h", "2d"),              # region override
    ("bank_transfer", "BR", "2h", "5d"),     # channel+region beats region beats channel
])
def test_budgets_pick_the_most_specific_override_per_stage(channel, region, approval, payout):
    budgets = TABLE.budgets(channel, region)
    assert budgets["approval"] == sla.parse_duration(approval)
    assert budgets["payout"] == sla.parse_duration(payout)
    assert budgets["intake"] == timedelta(seconds=30)
    assert list(budgets) == list(sla.STAGES)


def test_deadlines_are_cumulative_in_stage_order():
    deadlines = TABLE.deadlines(T0, "bank_transfer", "BR")
    assert deadlines == {
        "intake": T0 + timedelta(seconds=30),
        "approval": T0 + timedelta(seconds=30, hours=2),
        "payout": T0 + timedelta(seconds=30, hours=2, days=5),
        "reconcile": T0 + timedelta(seconds=30, hours=2, days=7),
        "notify": T0 + timedelta(seconds=30, hours=2, days=7, minutes=15),
    }


def test_the_repo_file_loads():
    table = sla.load(REPO_FILE)
    assert table.budgets("bank_transfer", "DE")["payout"] == timedelta(days=3)
    assert table.budgets("card", "US")["reconcile"] == timedelta(days=3)
    assert table.budgets("card", "DE") == table.default.given()


@pytest.mark.parametrize(("text", "message"), [
    ("version: v1\ndefault: {intake: 30s, approval: 4h, payout: 1d, reconcile: 2d}\n",
     "default: Value error, the default needs a budget for every stage; missing: notify"),
    ("version: v1\ndefault: {intake: 30s, approval: 4x, payout: 1d, reconcile: 2d, notify: 1m}\n",
     "default.approval: Value error, '4x' is not a duration"),
    ("version: v1\ndefault: {intake: 30s, approval: 4h, payout: 1d, reconcile: 2d, notify: 1m}\n"
     "overrides:\n  - stages: {payout: 2d}\n",
     "overrides.0: Value error, an override needs a channel, a region, or both"),
    ("version: v1\ndefault: {intake: 30s, approval: 4h, payout: 1d, reconcile: 2d, notify: 1m}\n"
     "overrides:\n  - channel: cash\n    stages: {payout: 2d}\n",
     "overrides.0.channel: Input should be 'card'"),
    ("version: v1\ndefault: {intake: 30s, approval: 4h, payout: 1d, reconcile: 2d, notify: 1m}\n"
     "overrides:\n  - region: XX\n    stages: {refund: 2d}\n",
     "overrides.0.region: XX is not an ISO 3166-1 alpha-2 country; overrides.0.stages.refund: Extra inputs"),
    ("version: v1\ndefault: [intake\n", "not valid YAML"),
    ("just text\n", "file: Input should be a valid dictionary"),
])
def test_bad_files_fail_with_a_message_naming_the_place(tmp_path, text, message):
    path = tmp_path / "sla.yaml"
    path.write_text(text)
    with pytest.raises(sla.SlaFileError) as failure:
        sla.load(path)
    assert str(failure.value).startswith(f"{path}: ")
    assert message in str(failure.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(sla.SlaFileError, match="cannot read the SLA file"):
        sla.load(tmp_path / "nope.yaml")
