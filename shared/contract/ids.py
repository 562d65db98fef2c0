"""Deterministic identifiers of the contract."""

import uuid

_REFUND_NAMESPACE = uuid.UUID("6f1c8a52-3d0e-4b8e-9a4f-2f6c1f0b7d11")


def refund_id_for(source: str, request_id: str) -> str:
    """The refund id of a platform request: (source, request_id) is one refund forever.

    The length prefix keeps ("ab", "c") and ("a", "bc") apart.
    """
    name = f"{len(source)}:{source}{request_id}"
    return "rf_" + uuid.uuid5(_REFUND_NAMESPACE, name).hex
