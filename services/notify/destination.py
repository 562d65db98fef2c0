"""A failed refund's new destination, as the customer gives it on the signed page: a bank account
checked here (schwifty: country format and check digits), sealed for payout, shown only masked."""

from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from schwifty import IBAN
from schwifty.exceptions import SchwiftyException

from shared.contract.contact_seal import seal
from shared.contract.events import Channel, DestinationProvided

HOLDER_MAX = 70  # SEPA's limit for a creditor name
# The seal's customer context payout opens it with (shared/contract/contact_seal.py).
SEAL_CONTEXT = "destination"


class DestinationRefused(ValueError):
    """What is wrong with the account given: `code` names it for the page's text (`holder`, `iban`)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True)
class BankAccount:
    holder: str
    iban: str  # compact, upper case

    @property
    def summary(self) -> str:
        """Safe to show and keep: country and check digits, and the last four (`DE89 •••• 3000`)."""
        return f"{self.iban[:4]} •••• {self.iban[-4:]}"


def bank_account(holder: str, iban: str) -> BankAccount:
    """The account, or DestinationRefused naming the field that is wrong."""
    holder = " ".join(holder.split())
    if not holder or len(holder) > HOLDER_MAX:
        raise DestinationRefused("holder", f"the account holder's name must be 1 to {HOLDER_MAX} characters")
    try:
        checked = IBAN(iban)
    except SchwiftyException as error:
        raise DestinationRefused("iban", f"not a valid IBAN: {error}") from None
    return BankAccount(holder, checked.compact)


def provided(account: BankAccount, refund_id: str, key: X25519PublicKey, at: datetime) -> DestinationProvided:
    """`refund.destination-provided.v1`: the account sealed so only payout can read it."""
    sealed = seal(key, {"iban": account.iban, "holder": account.holder}, refund_id=refund_id,
                  customer_id=SEAL_CONTEXT)
    return DestinationProvided(refund_id=refund_id, channel=Channel.BANK_TRANSFER, destination_sealed=sealed,
                               summary=account.summary, provided_at=at)
