"""The ticket's stage SLAs (deploy/sla.yaml): a budget per stage, overridable per channel and region.

A refund received at t is due out of stage N at t + the budgets of stages 1..N
(`SlaTable.deadlines`). Pure apart from `load`, which reads and validates the file.
"""

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from shared.contract.events import Channel, Country
from shared.contract.lifecycle import STAGES
from shared.runtime.metrics import SLA_BUDGET

_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SlaFileError(Exception):
    """The SLA file is missing, not YAML, or breaks the schema; the message names where."""


def parse_duration(value: object) -> timedelta:
    """'30s', '15m', '4h', '2d' (one number and unit; at least a second) as a timedelta."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or int(match[1]) == 0:
        raise ValueError(f"{value!r} is not a duration like 30s, 15m, 4h or 2d")
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageBudgets(_Strict):
    """Budgets for some stages (an override may name only the ones it changes)."""

    intake: Duration | None = None
    approval: Duration | None = None
    payout: Duration | None = None
    reconcile: Duration | None = None
    notify: Duration | None = None

    def given(self) -> dict[str, timedelta]:
        return {stage: budget for stage in STAGES if (budget := getattr(self, stage)) is not None}


class DefaultBudgets(StageBudgets):
    """The default row must give every stage a budget."""

    @model_validator(mode="after")
    def _every_stage(self) -> "DefaultBudgets":
        if missing := [stage for stage in STAGES if getattr(self, stage) is None]:
            raise ValueError(f"the default needs a budget for every stage; missing: {', '.join(missing)}")
        return self


class SlaOverride(_Strict):
    channel: Channel | None = None
    region: Country | None = None
    stages: StageBudgets

    @model_validator(mode="after")
    def _matches_something(self) -> "SlaOverride":
        if self.channel is None and self.region is None:
            raise ValueError("an override needs a channel, a region, or both")
        return self

    def matches(self, channel: str, region: str) -> bool:
        return (self.channel in (None, channel)) and (self.region in (None, region))

    @property
    def specificity(self) -> int:
        # channel+region (3) over region (2) over channel (1).
        return (self.channel is not None) + 2 * (self.region is not None)


class SlaTable(_Strict):
    """deploy/sla.yaml: the default budget per stage and the overrides per channel/region."""

    version: str = Field(min_length=1)
    default: DefaultBudgets
    overrides: list[SlaOverride] = []

    def budgets(self, channel: str, region: str) -> dict[str, timedelta]:
        """Each stage's budget for a refund on this channel in this region."""
        budgets = self.default.given()
        matching = sorted((o for o in self.overrides if o.matches(channel, region)), key=lambda o: o.specificity)
        for override in matching:  # least specific first, so the most specific is applied last
            budgets.update(override.stages.given())
        return budgets

    def deadlines(self, received_at: datetime, channel: str, region: str) -> dict[str, datetime]:
        """The cumulative due time of each stage for a refund received at `received_at`."""
        budgets = self.budgets(channel, region)
        due, deadlines = received_at, {}
        for stage in STAGES:
            due += budgets[stage]
            deadlines[stage] = due
        return deadlines


def load(path: Path | str) -> SlaTable:
    """Read and validate the SLA file; SlaFileError says what is wrong and where."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise SlaFileError(f"{path}: cannot read the SLA file: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise SlaFileError(f"{path}: not valid YAML: {error}") from None
    try:
        return SlaTable.model_validate(raw)
    except ValidationError as invalid:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'file'}: {item['msg']}"
            for item in invalid.errors(include_url=False)
        )
        raise SlaFileError(f"{path}: {problems}") from None


def export_sla(table: SlaTable) -> None:
    """The SLA table as gauges, so dashboards draw latency against the SLA it is measured by."""
    for stage, budget in table.default.given().items():
        SLA_BUDGET.labels(stage, "any", "any").set(budget.total_seconds())
    for override in table.overrides:
        for stage, budget in override.stages.given().items():
            SLA_BUDGET.labels(stage, override.channel or "any", override.region or "any").set(budget.total_seconds())
