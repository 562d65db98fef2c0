"""The refund SOP as code: a versioned YAML file, validated with errors that name the line.

`python -m services.approval.policy check deploy/policy/refund-policy.yaml` checks a
file the way start-up does, so a policy change can be verified before it ships.
"""

import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel, BeforeValidator, ConfigDict, Field, PositiveInt, StrictBool, StrictInt, StrictStr,
    ValidationError, model_validator,
)

from shared.contract.events import Channel, Country, Reason
from shared.contract.money import Money
from shared.runtime.roles import Role

_DURATION = re.compile(r"(\d+)([smhd])")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _duration(value: object) -> timedelta:
    if isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        return timedelta(**{_UNIT[match[2]]: int(match[1])})
    raise ValueError(f"expected a duration like 30s, 15m, 4h or 3d, got {value!r}")


def _currency_code(code: object) -> object:
    Money(value=0, currency=code)  # raises the contract's invalid_currency error
    return code


Duration = Annotated[timedelta, BeforeValidator(_duration)]
CurrencyCode = Annotated[StrictStr, BeforeValidator(_currency_code)]
Thresholds = dict[CurrencyCode, Annotated[StrictInt, Field(ge=0)]]  # minor units of each currency
Action = Literal["approve", "review", "deny"]


class _Strict(BaseModel):
    # A misspelt key is an error naming its line, never a silently ignored rule.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(_Strict):
    """All given conditions must hold for a rule to fire; an empty `when` always fires."""

    channel: list[Channel] | None = None
    reason: list[Reason] | None = None
    region: list[Country] | None = None
    region_not: list[Country] | None = None
    source: list[StrictStr] | None = None
    scope: Literal["full", "partial"] | None = None
    # The refund's currency is not legal tender in its region (ISO 4217 country data).
    cross_currency: StrictBool | None = None
    # Compared in the refund's own currency; a currency not listed never matches.
    amount_over: Thresholds | None = None
    amount_up_to: Thresholds | None = None
    # Days from payment capture to the request. Needs payment.captured_at: when it is unknown and the
    # rule's other conditions hold, the rule fires as a review (`<rule id>:captured_at_unknown`).
    days_since_capture_over: PositiveInt | None = None


class Rule(_Strict):
    id: Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,63}$")]
    description: StrictStr = ""
    when: Condition = Condition()
    action: Action
    approvals: Literal[1, 2] = 1  # review only: 2 means four eyes
    roles: list[Role] = Field(default_factory=lambda: list(Role))  # who may decide the review; default: any staff


class Waiting(_Strict):
    """How long a review or hold may wait: escalate at `sla`, apply `on_expiry` at `expire_after`.

    `deny` and `approve` decide it as user `system`; `park` takes it out of the live queue as `expired`,
    still waiting in the approval stage (status unchanged) until a senior reviewer reopens it: a denial
    is final, so only a parked review can come back.
    """

    sla: Duration
    expire_after: Duration
    on_expiry: Literal["deny", "approve", "park"] = "deny"

    @model_validator(mode="after")
    def _expiry_after_sla(self) -> "Waiting":
        if self.expire_after <= self.sla:
            raise ValueError("expire_after must be longer than sla")
        return self


class Velocity(_Strict):
    max_refunds: PositiveInt  # earlier refunds per customer inside `window` before a hold
    window: Duration


class History(_Strict):
    min_refunds: PositiveInt = 3  # below this the customer has no history to compare with
    max_multiple_of_median: PositiveInt


class Risk(_Strict):
    hold_reasons: list[Reason] = [Reason.FRAUDULENT]
    hold_open_disputes: StrictBool = True
    velocity: Velocity | None = None
    history: History | None = None
    release_roles: list[Role] = [Role.SENIOR_REVIEWER, Role.FINANCE_LEAD]


class Policy(_Strict):
    version: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    default_action: Action = "review"  # when no rule fires
    review: Waiting
    hold: Waiting
    risk: Risk = Risk()
    rules: Annotated[list[Rule], Field(min_length=1)]


class PolicyError(Exception):
    """A policy file that must not be used; the message names file, line and field of every problem."""


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc.strerror}") from exc
    try:
        # Parse once: the node tree gives the line numbers, the same tree gives the data.
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise PolicyError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    lines = _line_index(root) if root is not None else {}
    try:
        policy = Policy.model_validate(data)
    except ValidationError as invalid:
        raise PolicyError(_describe(path, invalid, lines)) from None
    seen: dict[str, int] = {}
    for n, rule in enumerate(policy.rules):
        if rule.id in seen:
            line = lines.get(("rules", n, "id"), 0)
            raise PolicyError(f"{path}:{line}: rules.{n}.id: duplicate rule id {rule.id!r} "
                              f"(first at rules.{seen[rule.id]})")
        seen[rule.id] = n
    return policy


def _line_index(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """1-based line of every mapping key and sequence item, by its path in the document."""
    index = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            index.update(_line_index(value, path + (key.value,)))
            index[path + (key.value,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for n, item in enumerate(node.value):
            index.update(_line_index(item, path + (n,)))
    return index


def _describe(path: Path, invalid: ValidationError, lines: dict[tuple, int]) -> str:
    problems = []
    for error in invalid.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
        prefix = next((loc[:n] for n in range(len(loc), -1, -1) if loc[:n] in lines), ())
        field = ".".join(str(part) for part in loc) or "(document)"
        problems.append(f"{path}:{lines.get(prefix, 1)}: {field}: {error['msg']}")
    return f"invalid refund policy ({len(problems)} problem(s)):\n" + "\n".join(problems)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "check":
        print("usage: python -m services.approval.policy check POLICY.yaml", file=sys.stderr)
        return 2
    try:
        policy = load_policy(Path(argv[1]))
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{argv[1]}: policy {policy.version} is valid ({len(policy.rules)} rules)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
