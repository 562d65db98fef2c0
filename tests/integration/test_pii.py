"""Customer contact data on the real stack: it reaches notify, and nothing else keeps or tells it.

A refund whose customer's email and phone are unique markers goes through to `reconciled`; a
request carrying them is rejected and a forged accepted event carrying them is dead-lettered. Then
every service's log, every table of every schema but notify's, the DLQ and the events that travel
to approval, payout and reconcile are searched for the markers: none has them, while notify sent to
the marker email and phone.
"""

import base64
import uuid
from pathlib import Path

import orjson
import pytest

from shared.contract import topics
from shared.contract.envelope import encode
from shared.contract.events import RefundAccepted
from tests.integration.helpers import TopicTail, publish, refund_of, valid_request, wait_until
from tests.integration.notify_sinks import Sinks
from tests.integration.service_fixtures import service_configured

pytestmark = pytest.mark.integration
SOURCE = "shop-pii"
NOT_NOTIFY = ("intake", "approval", "payout", "reconcile", "gateway_sim")
# The topics whose events approval, payout and reconcile consume.
DOWNSTREAM = (topics.ACCEPTED, topics.APPROVED, topics.PAID, topics.HELD, topics.PAYOUT_SUBMITTED)


@pytest.fixture(scope="module")
def sinks(stack):
    servers = Sinks().start()
    try:
        with service_configured(stack, "notify", **servers.env(SOURCE)):
            yield servers
    finally:
        servers.stop()


def markers() -> tuple[str, str, str]:
    """(marker, email, phone): the email's local part is the marker, the phone's digits are unique too."""
    n = uuid.uuid4().hex[:10]
    return f"piimark{n}", f"piimark{n}@example.com", f"+4917{int(n, 16) % 10**9:09d}"


def found_in(text: str, needles: tuple[str, ...]) -> list[str]:
    return [needle for needle in needles if needle in text]


def as_text(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode(errors="replace")
    return str(value)


async def rows_with(db, schema: str, needles: tuple[str, ...]) -> list[str]:
    """`schema.table: row` for every row of every table in the schema that holds a needle."""
    tables = await db.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = $1 "
                            "AND table_type = 'BASE TABLE'", schema)
    assert tables, f"schema {schema} has no tables"
    hits = []
    for table in tables:
        for row in await db.fetch(f'SELECT * FROM {schema}."{table["table_name"]}"'):
            # A dead letter's `value` is the message as it came, as the DLQ's raw_base64 (below): its own
            # error, key and headers are searched.
            text = " | ".join(as_text(v) for k, v in row.items() if (table["table_name"], k) != ("dead_letters", "value"))
            if found_in(text, needles):
                hits.append(f"{schema}.{table['table_name']}: {text[:300]}")
    return hits


def forged_accepted(request: dict, email: str) -> tuple[str, bytes, list]:
    """A refund.accepted.v1 from intake's source whose customer email breaks the contract: approval
    cannot read it, so it is dead-lettered with the validation error."""
    refund_id = refund_of(request, SOURCE)
    valid = RefundAccepted.model_validate({
        **request, "refund_id": refund_id, "source": SOURCE, "channel": request["payment"]["channel"],
        "customer": {"id": request["customer"]["id"]}, "accepted_at": request["requested_at"]})
    out = encode(valid, source=topics.INTAKE_SOURCE, key=refund_id)
    event = orjson.loads(out.value)
    event["data"]["customer"]["email"] = email
    return refund_id, orjson.dumps(event), list(out.headers.items())


async def test_contact_data_reaches_notify_only(sinks, stack, producer, status_feed, db):
    marker, email, phone = markers()
    needles = (marker, phone.removeprefix("+"))
    request = valid_request()
    request["customer"] = {"id": f"cus-{marker[-6:]}", "email": email, "phone": phone, "locale": "en"}
    refund_id = refund_of(request, SOURCE)

    # Rejected: the contact is valid, the amount is not (a float); and one whose email is the broken part.
    bad_amount = valid_request(amount=1)
    bad_amount["amount"]["value"] = 12.5
    bad_amount["customer"] = dict(request["customer"], id="cus-bad-amount")
    bad_email = valid_request()
    bad_email["customer"] = {"id": "cus-bad-email", "email": f"{marker}-no-at-sign", "phone": phone}
    forged_id, forged, forged_headers = forged_accepted(valid_request(), f"{marker}-forged-no-at-sign")

    async with TopicTail(stack.bootstrap, topics.DLQ) as dlq, TopicTail(stack.bootstrap, *DOWNSTREAM) as downstream:
        await publish(producer, request, source=SOURCE)
        await publish(producer, bad_amount, source=SOURCE)
        await publish(producer, bad_email, source=SOURCE)
        await producer.send_and_wait(topics.ACCEPTED, forged, key=forged_id.encode(), headers=forged_headers)

        assert await status_feed.wait_for(lambda: status_feed.status_of(refund_id) == "reconciled", timeout=90)
        for rejected in (bad_amount, bad_email):
            rejected_id = refund_of(rejected, SOURCE)
            assert await status_feed.wait_for(lambda: status_feed.status_of(rejected_id) == "rejected", timeout=60)
        letter = await dlq.wait_for(lambda e: e["source"] == topics.APPROVAL_SOURCE and e["data"]["key"] == forged_id,
                                    timeout=60)
        dead = await dlq.read_to_end()
        travelled = await downstream.read_to_end()

    # The dead letter says which field broke and how, never what it held; its raw bytes are the
    # contract's copy of the message for replay (SPEC: "refunds.dlq with the raw bytes").
    assert "customer.email" in letter["data"]["error"], letter["data"]["error"]
    assert marker in base64.b64decode(letter["data"]["raw_base64"]).decode()
    leaks: dict[str, list[str]] = {}
    leaks["dlq"] = [e["data"]["error"][:300] for e in dead if found_in(orjson.dumps(
        {**e, "data": {k: v for k, v in e["data"].items() if k != "raw_base64"}}).decode(), needles)]

    ours = [e for e in travelled if (e.get("data") or {}).get("refund_id") == refund_id]
    assert {e["type"] for e in ours} >= {"refund.accepted.v1", "refund.approved.v1", "refund.paid.v1"}
    leaks["events"] = [e["type"] for e in ours if found_in(orjson.dumps(e).decode(), needles)]
    assert all(e["data"]["customer"]["id"] == request["customer"]["id"] for e in ours if "customer" in e["data"])

    # Notify has the contact: it mailed and texted the customer.
    async def sent():
        rows = await db.fetch("SELECT channel, recipient FROM notify.notifications WHERE refund_id = $1 "
                              "AND channel IN ('email', 'sms') AND state = 'sent'", refund_id)
        return {(r["channel"], r["recipient"]) for r in rows} >= {("email", email), ("sms", phone)}

    assert await wait_until(sent, timeout=60)
    assert sinks.mail.to(email) and sinks.http.texts_to(phone)

    for schema in NOT_NOTIFY:
        leaks[schema] = await rows_with(db, schema, needles)

    logs = sorted(Path(stack.logs_dir).glob("*.log"))
    assert {p.stem for p in logs} >= {"intake", "approval", "payout", "reconcile", "notify"}
    leaks["logs"] = [f"{p.name}: {line[:300]}" for p in logs
                     for line in p.read_text(errors="replace").splitlines() if found_in(line, needles)]
    leaks = {where: found for where, found in leaks.items() if found}
    assert not leaks, f"contact data outside notify: {list(leaks)}: {leaks}"


async def test_tickets_from_before_lose_their_customers_contact(stack, db):
    request = valid_request()
    refund_id = refund_of(request, SOURCE)
    legacy = {"id": "e-legacy", "type": "refund.accepted.v1", "source": topics.INTAKE_SOURCE, "specversion": "1.0",
              "data": {"refund_id": refund_id, "customer": {"id": "cus-old", "email": "old@example.com",
                                                            "phone": "+4915100000000", "locale": "en"}}}
    await db.execute(
        "INSERT INTO intake.tickets (refund_id, source, request_id, outcome, outcome_topic, outcome_key, "
        "outcome_value, outcome_headers, received_at) VALUES ($1, $2, $3, 'accepted', $4, $1, $5, '{}', now())",
        refund_id, SOURCE, request["request_id"], topics.ACCEPTED, orjson.dumps(legacy))
    migration = Path(__file__).resolve().parents[2] / "services/intake/migrations/0004_tickets_without_contact.sql"
    await db.execute(migration.read_text())
    kept = orjson.loads(await db.fetchval("SELECT outcome_value FROM intake.tickets WHERE refund_id = $1", refund_id))
    assert kept["data"]["customer"] == {"id": "cus-old", "locale": "en"} and kept["id"] == "e-legacy"
