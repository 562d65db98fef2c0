"""Approval's consume step: one accepted refund -> approved or denied."""

from datetime import UTC, datetime

import asyncpg

from services.approval import domain
from shared.envelope import Outgoing, encode
from shared.events import RefundAccepted, RefundApproved, RefundDenied
from shared.metrics import observe_completion
from shared.stage import Inbound

SOURCE = "refund-pipeline/approval"


class ApprovalStep:
    def __init__(self, auto_approve_max_minor: int, sla_seconds: float) -> None:
        self.auto_approve_max_minor = auto_approve_max_minor
        self.sla_seconds = sla_seconds

    async def __call__(self, conn: asyncpg.Connection, item: Inbound) -> list[Outgoing]:
        refund = RefundAccepted.model_validate(item.event.get_data())
        decision = domain.decide(refund, self.auto_approve_max_minor)
        now = datetime.now(UTC)
        status = await conn.execute(
            "INSERT INTO approval.decisions (refund_id, decision, policy_version, rule_ids, channel, accepted_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (refund_id) DO NOTHING",
            refund.refund_id, "approved" if decision.approved else "denied", domain.POLICY_VERSION,
            list(decision.rule_ids), refund.channel.value, refund.accepted_at)
        if status.endswith("0"):
            return []  # decided before under another event id
        waited = (now - refund.accepted_at).total_seconds()
        observe_completion("approval", "approved" if decision.approved else "denied",
                           refund.channel.value, waited, overdue=waited > self.sla_seconds)
        common = refund.model_dump(exclude={"reason_codes"})
        if decision.approved:
            payload = RefundApproved(**common, reason_codes=list(decision.rule_ids),
                                     policy_version=domain.POLICY_VERSION, approved_at=now)
        else:
            payload = RefundDenied(**common, reason_codes=list(decision.rule_ids),
                                   policy_version=domain.POLICY_VERSION, denied_at=now)
        return [encode(payload, source=SOURCE, key=refund.refund_id)]

