"""A failed refund's new bank account as notify takes it: checked, masked, sealed for payout alone."""

from datetime import UTC, datetime

import pytest

from services.notify import destination
from shared.contract import contact_seal
from shared.contract.contact_seal import SealBroken, open_seal


def test_an_iban_is_checked_compacted_and_shown_masked():
    account = destination.bank_account("  Ana   Lima ", "de89 3704 0044 0532 0130 00")
    assert (account.holder, account.iban, account.summary) == ("Ana Lima", "DE89370400440532013000", "DE89 •••• 3000")


@pytest.mark.parametrize(("holder", "iban", "code"), [
    ("Ana", "DE89 3704 0044 0532 0130 01", "iban"),  # check digits wrong
    ("Ana", "hello", "iban"),
    ("", "DE89370400440532013000", "holder"),
    ("x" * 71, "DE89370400440532013000", "holder"),
])
def test_a_bad_account_is_refused_naming_the_field(holder, iban, code):
    with pytest.raises(destination.DestinationRefused) as refused:
        destination.bank_account(holder, iban)
    assert refused.value.code == code


def test_only_payouts_key_opens_the_account_and_only_for_its_refund():
    account = destination.bank_account("Ana Lima", "DE89370400440532013000")
    event = destination.provided(account, "rf_1", contact_seal.public_key(contact_seal.LOCAL_DESTINATION_PUBLIC_KEY),
                                 datetime(2026, 12, 2, tzinfo=UTC))
    payout = contact_seal.private_key(contact_seal.LOCAL_DESTINATION_PRIVATE_KEY)
    assert open_seal(payout, event.destination_sealed, refund_id="rf_1", customer_id="destination") == {
        "iban": "DE89370400440532013000", "holder": "Ana Lima"}
    assert (event.channel, event.summary) == ("bank_transfer", "DE89 •••• 3000")
    with pytest.raises(SealBroken):
        open_seal(payout, event.destination_sealed, refund_id="rf_2", customer_id="destination")
    with pytest.raises(SealBroken):  # notify's own key (the contact seal's) does not open it
        open_seal(contact_seal.private_key(contact_seal.LOCAL_PRIVATE_KEY), event.destination_sealed,
                  refund_id="rf_1", customer_id="destination")
