"""Staff routes every service has for its stage's dead letters (shared/runtime/dead_letters.py): list them
decoded, replay one through the stage once its cause is fixed, discard one, and read or close the breaker.

Any staff member may read; replaying, discarding and closing the breaker take a senior reviewer or a
finance lead, a reason, and are audited (the row's handled_by/handled_reason/handled_at, and the log).
"""

from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field, StringConstraints

from shared.runtime import dead_letters
from shared.runtime.dead_letters import DeadLetterHandled, DeadLetterNotFound
from shared.runtime.roles import Role
from shared.runtime.stage import Stage
from shared.runtime.staff import StaffAuth, StaffUser

log = structlog.get_logger()

HANDLERS = (Role.SENIOR_REVIEWER, Role.FINANCE_LEAD)


class Handling(BaseModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500),
                      Field(description="why; kept with the dead letter and in the audit log")]


def dead_letter_router(service: str, stage: Stage, auth: StaffAuth) -> APIRouter:
    router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])
    any_staff = Depends(auth.require())
    handler = Depends(auth.require(*HANDLERS))

    @router.get("")
    async def list_dead_letters(user: Annotated[StaffUser, any_staff],
                                state: Literal["open", "replayed", "discarded"] | None = None,
                                limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict:
        """The stage's dead letters, oldest first, each with its payload decoded."""
        async with stage.pool.acquire() as conn:
            rows = await dead_letters.listed(conn, stage.schema, state, limit)
        return {"service": service, "dead_letters": [dead_letters.view(service, row) for row in rows]}

    @router.get("/breaker")
    async def breaker(user: Annotated[StaffUser, any_staff]) -> dict:
        return stage.breaker.status()

    @router.post("/breaker/close")
    async def close_breaker(body: Handling, user: Annotated[StaffUser, handler]) -> dict:
        """Resume consuming (the breaker opened: the stage dead-lettered more than its limit in a minute)."""
        stage.breaker.close(user.user_id, body.reason)
        return stage.breaker.status()

    @router.get("/{letter_id}")
    async def dead_letter(letter_id: int, user: Annotated[StaffUser, any_staff]) -> dict:
        async with stage.pool.acquire() as conn:
            return dead_letters.view(service, await _found(dead_letters.load(conn, stage.schema, letter_id)))

    @router.post("/{letter_id}/replay")
    async def replay(letter_id: int, body: Handling, user: Annotated[StaffUser, handler]) -> dict:
        """Run the record through this stage again (the cause is fixed); 409 unless the dead letter is open."""
        return dead_letters.view(service, await _found(stage.replay(letter_id, user.user_id, body.reason)))

    @router.post("/{letter_id}/discard")
    async def discard(letter_id: int, body: Handling, user: Annotated[StaffUser, handler]) -> dict:
        """Close it without processing it (untrusted, or nothing left to do); 409 unless it is open."""
        async with stage.pool.acquire() as conn:
            row = await _found(dead_letters.mark_handled(conn, stage.schema, letter_id, "discarded",
                                                         user.user_id, body.reason))
        log.info("dead_letter_discarded", stage=stage.schema, dead_letter=letter_id, actor=user.user_id,
                 reason=body.reason)
        return dead_letters.view(service, row)

    return router


async def _found(pending):
    try:
        return await pending
    except DeadLetterNotFound as missing:
        raise HTTPException(404, str(missing)) from None
    except DeadLetterHandled as handled:
        raise HTTPException(409, str(handled)) from None
