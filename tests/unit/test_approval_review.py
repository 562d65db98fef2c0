"""Bad policy files name the line; reviewers' decisions follow roles and four eyes."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from services.approval.domain import OpenReview, ReviewRefused, check_decision
from services.approval.policy import PolicyError, load_policy

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "deploy" / "policy" / "refund-policy.yaml").read_text()


def write(tmp_path, text):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("old", "new", "says"), [
    ("action: review\n    approvals: 2", "action: review\n    approvals: 3", "rules.2.approvals"),
    ("amount_up_to: {USD: 50000", "amount_up_to: {USD: 500.5", "valid integer"),
    ("amount_up_to: {USD: 50000", "amount_up_to: {XYZ: 50000", "XYZ is not an ISO 4217"),
    ("  sla: 4h", "  sla: four hours", "review.sla"),
    ("when: {channel: [card], days", "when: {chanel: [card], days", "Extra inputs"),
    ("id: bank-transfer-review", "id: auto-approve-standard", "duplicate rule id"),
    ("release_roles: [senior_reviewer", "release_roles: [intern", "risk.release_roles.0"),
    ("expire_after: 7d", "expire_after: 12h", "expire_after must be longer than sla"),
])
def test_bad_policy_names_line_and_field(tmp_path, old, new, says):
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    message = str(error.value)
    assert says in message
    # The reported line is where the broken text is (or the key that holds it).
    reported = int(message.split("policy.yaml:")[1].split(":")[0])
    last_line_of_change = max(n for n, text in enumerate(path.read_text().splitlines(), 1)
                              if new.splitlines()[-1] in text)
    assert last_line_of_change - 3 <= reported <= last_line_of_change


def test_yaml_syntax_error_names_the_line(tmp_path):
    with pytest.raises(PolicyError, match=r"policy.yaml:1[23]: not valid YAML"):
        load_policy(write(tmp_path, GOOD.replace('version: "2026.11-1"', "version: [oops")))


def test_wrong_key_is_reported_at_its_own_line(tmp_path):
    path = write(tmp_path, GOOD.replace("when: {channel: [card], days", "when: {chanel: [card], days"))
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "chanel" in text)
    with pytest.raises(PolicyError, match=rf"policy.yaml:{line}: rules.3.when.chanel: Extra inputs"):
        load_policy(path)


def test_policy_check_cli(tmp_path):
    good = subprocess.run([sys.executable, "-m", "services.approval.policy", "check",
                           str(ROOT / "deploy/policy/refund-policy.yaml")], capture_output=True, text=True, cwd=ROOT)
    assert good.returncode == 0 and "is valid" in good.stdout
    bad = subprocess.run([sys.executable, "-m", "services.approval.policy", "check",
                          str(write(tmp_path, GOOD.replace("sla: 24h", "sla: 1y")))],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "hold.sla" in bad.stderr


REVIEW = OpenReview(kind="review", state="open", required_approvals=2,
                    roles=("senior_reviewer", "finance_lead"), approvers=())


@pytest.mark.parametrize(("review", "action", "user", "roles", "outcome"), [
    (REVIEW, "approve", "alice", {"senior_reviewer"}, "approval_recorded"),
    (dataclasses.replace(REVIEW, approvers=("alice",)), "approve", "bob", {"finance_lead"}, "approve"),
    (OpenReview("review", "open", 1, ("reviewer",), ()), "approve", "carol", {"reviewer"}, "approve"),
    (REVIEW, "deny", "alice", {"senior_reviewer"}, "deny"),
    (OpenReview("hold", "open", 1, ("senior_reviewer",), ()), "release", "dan", {"senior_reviewer"}, "release"),
])
def test_permitted_decisions(review, action, user, roles, outcome):
    assert check_decision(review, action, user, frozenset(roles)) == outcome


@pytest.mark.parametrize(("review", "action", "user", "roles", "status", "code"), [
    (REVIEW, "approve", "rita", {"reviewer"}, 403, "role_not_permitted"),
    (OpenReview("review", "open", 2, ("senior_reviewer",), ("alice",)), "approve", "alice", {"senior_reviewer"},
     403, "four_eyes"),
    (OpenReview("review", "approved", 1, ("reviewer",), ("x",)), "deny", "y", {"reviewer"}, 409, "already_decided"),
    (OpenReview("hold", "open", 1, ("senior_reviewer",), ()), "approve", "dan", {"senior_reviewer"},
     422, "action_not_allowed"),
    (REVIEW, "release", "alice", {"senior_reviewer"}, 422, "action_not_allowed"),
])
def test_refused_decisions(review, action, user, roles, status, code):
    with pytest.raises(ReviewRefused) as refused:
        check_decision(review, action, user, frozenset(roles))
    assert (refused.value.status, refused.value.code) == (status, code)
