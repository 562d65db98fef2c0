"""Approval policy. Pure: no I/O.

The walking skeleton's policy approves automatically up to a ceiling and denies
above it; policies as code, risk holds and manual review arrive with issue #3.
"""

from dataclasses import dataclass

from shared.events import RefundAccepted

POLICY_VERSION = "skeleton-1"


@dataclass(frozen=True)
class Decision:
    approved: bool
    rule_ids: tuple[str, ...]


def decide(refund: RefundAccepted, auto_approve_max_minor: int) -> Decision:
    """Approve when the refund is within the automatic ceiling (in minor units of its currency)."""
    if refund.amount.value <= auto_approve_max_minor:
        return Decision(approved=True, rule_ids=("auto_approve_within_ceiling",))
    return Decision(approved=False, rule_ids=("above_auto_approve_ceiling",))
