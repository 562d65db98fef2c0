"""What both personalities' routes share: the simulator's context, answers, errors, form bodies."""

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import parse_qsl

import asyncpg
import orjson
from fastapi import Request
from fastapi.responses import Response

from gatewaysim.faults import SimFaults
from gatewaysim.settings import Account, SimSettings


@dataclass
class SimContext:
    """Everything a route needs, built once at start (app.state.sim)."""

    pool: asyncpg.Pool
    settings: SimSettings
    faults: SimFaults
    fx_rates: Mapping[str, Decimal] = field(default_factory=dict)

    @property
    def accounts(self) -> Mapping[str, Account]:
        return self.settings.accounts


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as the idempotency store keeps it: status and exact body bytes."""

    status: int
    body: bytes
    replayed: bool = False

    @classmethod
    def of(cls, status: int, data: object) -> "Answer":
        return cls(status, orjson.dumps(data))

    def response(self, headers: Mapping[str, str] | None = None) -> Response:
        extra = dict(headers or {})
        if self.replayed:
            extra["Idempotent-Replayed"] = "true"
        return Response(self.body, status_code=self.status, media_type="application/json", headers=extra)


class ApiError(Exception):
    """Raised by a route: answered as-is (an error in the personality's own shape)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


def context(request: Request) -> SimContext:
    return request.app.state.sim


async def pause(ctx: SimContext) -> None:
    """Every call to an account takes SIM_LATENCY_MS."""
    if ctx.faults.latency_ms:
        await asyncio.sleep(ctx.faults.latency_ms / 1000)


_KEY_PART = re.compile(r"\[([^\]]*)\]")


def decode_form(body: bytes) -> dict:
    """Stripe's form encoding: `metadata[k]=v&expand[]=x` -> {"metadata": {"k": "v"}, "expand": ["x"]}.

    An indexed list (`expand[0]=x`) decodes as a dict keyed by the index.
    """
    params: dict = {}
    for key, value in parse_qsl(body.decode(), keep_blank_values=True):
        head, _, rest = key.partition("[")
        path = [head, *_KEY_PART.findall("[" + rest)]
        appends = path[-1] == "" and len(path) > 1
        if appends:
            path.pop()
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if appends:
            node.setdefault(path[-1], []).append(value)
        else:
            node[path[-1]] = value
    return params


def fingerprint(method: str, path: str, params: object) -> str:
    """What makes two requests under one idempotency key "the same parameters"."""
    return orjson.dumps([method, path, params], option=orjson.OPT_SORT_KEYS).decode()
