"""Staff roles of the back office (SPEC.md: reviewers and finance)."""

from enum import StrEnum


class Role(StrEnum):
    REVIEWER = "reviewer"
    SENIOR_REVIEWER = "senior_reviewer"
    FINANCE_LEAD = "finance_lead"
