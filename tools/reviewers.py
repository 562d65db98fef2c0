"""A desk of demo reviewers working approval's queue through its public HTTP API.

Three staff users (reviewer, senior reviewer, finance lead) decide what policy and
risk rules park: holds are mostly released, fraud holds sometimes denied, reviews
mostly approved, four-eyes reviews approved by two different people.
"""

import asyncio
import random
from collections import Counter

import httpx

from shared.runtime.roles import Role
from shared.runtime.settings import ServiceSettings
from shared.runtime.staff import mint_token

DESK = (("demo-reviewer", Role.REVIEWER), ("demo-senior", Role.SENIOR_REVIEWER), ("demo-lead", Role.FINANCE_LEAD))


class DemoReviewers:
    def __init__(self, approval_url: str, seed: int, secret: str | None = None) -> None:
        secret = secret or ServiceSettings().staff_token_secret
        self.tokens = {user: (role, mint_token(secret, user, [role])) for user, role in DESK}
        self.url = approval_url
        self.rng = random.Random(seed)
        self.decisions: Counter[str] = Counter()
        self.reviewed: set[str] = set()

    async def work(self, stop: asyncio.Event, every: float = 0.5) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            while not stop.is_set():
                queue = await http.get("/v1/reviews", params={"limit": 500},
                                       headers=self._auth("demo-reviewer"))
                for item in queue.json()["reviews"]:
                    await self._decide(http, item)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=every)
                except TimeoutError:
                    pass

    async def _decide(self, http: httpx.AsyncClient, item: dict) -> None:
        user = next((u for u, (role, _) in self.tokens.items()
                     if role in item["roles"] and u not in item["approvers"]), None)
        if user is None:
            return
        if item["kind"] == "hold":
            fraud = "risk-reason-fraudulent" in item["rule_ids"]
            action, reason = ("deny", "fraud confirmed") if fraud and self.rng.random() < 0.5 else (
                "release", "customer and order verified")
        else:
            action, reason = ("deny", "order shows no return") if self.rng.random() < 0.1 else (
                "approve", "matches order and payment")
        answer = await http.post(f"/v1/reviews/{item['refund_id']}/decision", headers=self._auth(user),
                                 json={"action": action, "reason": f"demo: {reason}"})
        if answer.status_code == 200:
            self.reviewed.add(item["refund_id"])
            self.decisions[f"{item['kind']} {action}" + (" (4 eyes)" if item["required_approvals"] == 2 else "")] += 1

    def _auth(self, user: str) -> dict:
        return {"Authorization": f"Bearer {self.tokens[user][1]}"}
