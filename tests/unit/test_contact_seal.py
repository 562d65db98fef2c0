"""The contact seal (shared/contract/contact_seal.py), what intake passes on, and error text without values."""

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from services.intake import domain
from shared.contract import contact_seal
from shared.contract.contact_seal import SealBroken, open_seal, seal
from shared.contract.events import Customer, RefundRequested
from shared.runtime.safe_errors import error_text

CONTACT = {"email": "ana@example.com", "phone": "+4915112345678"}


def pair():
    private_text, public_text = contact_seal.new_key_pair()
    return contact_seal.private_key(private_text), contact_seal.public_key(public_text)


def test_notify_opens_what_intake_sealed_for_its_refund_and_customer():
    private, public = pair()
    sealed = seal(public, CONTACT, refund_id="rf_1", customer_id="cus-1")
    assert "ana" not in sealed and "4915112345678" not in sealed
    assert open_seal(private, sealed, refund_id="rf_1", customer_id="cus-1") == CONTACT


def test_each_seal_differs_so_equal_contacts_cannot_be_linked():
    _, public = pair()
    assert seal(public, CONTACT, refund_id="rf_1", customer_id="c") != seal(public, CONTACT, refund_id="rf_1",
                                                                               customer_id="c")


@pytest.mark.parametrize("where", [{"refund_id": "rf_2", "customer_id": "cus-1"},
                                   {"refund_id": "rf_1", "customer_id": "cus-2"}])
def test_a_seal_moved_to_another_refund_or_customer_does_not_open(where):
    private, public = pair()
    sealed = seal(public, CONTACT, refund_id="rf_1", customer_id="cus-1")
    with pytest.raises(SealBroken):
        open_seal(private, sealed, **where)


def test_another_key_or_a_flipped_byte_or_junk_does_not_open():
    private, public = pair()
    other, _ = pair()
    sealed = seal(public, CONTACT, refund_id="rf_1", customer_id="c")
    blob = bytearray(base64.b64decode(sealed))
    blob[-1] ^= 1
    for key, text in [(other, sealed), (private, base64.b64encode(bytes(blob)).decode()), (private, "not base64!"),
                      (private, base64.b64encode(b"\x01short").decode())]:
        with pytest.raises(SealBroken):
            open_seal(key, text, refund_id="rf_1", customer_id="c")


def test_keys_read_as_pem_or_raw_base64_and_the_local_pair_matches():
    private, public = pair()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    sealed = seal(contact_seal.public_key(pem), CONTACT, refund_id="rf", customer_id="c")
    assert open_seal(contact_seal.private_key(private_pem), sealed, refund_id="rf", customer_id="c") == CONTACT
    local = seal(contact_seal.public_key(contact_seal.LOCAL_PUBLIC_KEY), CONTACT, refund_id="rf", customer_id="c")
    assert open_seal(contact_seal.private_key(contact_seal.LOCAL_PRIVATE_KEY), local,
                     refund_id="rf", customer_id="c") == CONTACT
    with pytest.raises(ValueError):
        contact_seal.public_key("AAAA")


def test_intake_passes_on_the_customer_id_and_locale_and_only_the_seal():
    customer = Customer(id="cus-1", locale="zh-CN", **CONTACT)
    assert domain.contact_of(customer) == CONTACT
    onward = domain.onward_customer(customer, "sealed-blob")
    assert onward.model_dump() == {"id": "cus-1", "locale": "zh-CN", "contact_sealed": "sealed-blob",
                                   "email": None, "phone": None}
    assert domain.contact_of(Customer(id="cus-2")) == {}


def test_validation_error_text_names_fields_and_types_never_values():
    with pytest.raises(ValidationError) as invalid:
        RefundRequested.model_validate({"customer": {"id": "c", "email": "ana-secret-no-at", "phone": "0049-secret"}})
    text = error_text(invalid.value)
    assert "secret" not in text and "input_value" not in text
    assert "customer.email [invalid]" in text and "customer.phone [invalid]" in text and "request_id [missing]" in text
    assert error_text(KeyError("x")) == "KeyError: 'x'"
