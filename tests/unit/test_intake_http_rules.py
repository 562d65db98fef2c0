"""Pure rules behind POST /v1/refunds: body hashing, key/body agreement, API key minting, bad SLA start-up."""

import os
import subprocess
import sys
from pathlib import Path

from services.intake import credentials
from services.intake.domain import key_mismatch_errors, request_hash

ROOT = Path(__file__).resolve().parents[2]


def test_the_body_hash_ignores_key_order_and_whitespace_but_not_values():
    assert request_hash({"a": 1, "b": {"c": [1, 2], "d": "x"}}) == request_hash({"b": {"d": "x", "c": [1, 2]}, "a": 1})
    assert request_hash({"amount": {"value": 100}}) != request_hash({"amount": {"value": 101}})
    assert request_hash({"a": [1, 2]}) != request_hash({"a": [2, 1]})


def test_the_body_request_id_must_be_the_idempotency_key():
    assert key_mismatch_errors({"request_id": "k1"}, "k1") == []
    assert key_mismatch_errors({"order_id": "o"}, "k1") == []  # absent: taken from the header
    [error] = key_mismatch_errors({"request_id": "k2"}, "k1")
    assert (error.field, error.code) == ("request_id", "invalid")
    assert "Idempotency-Key" in error.message


def test_minted_keys_are_random_hashed_and_carry_their_id():
    first, second = credentials.mint(), credentials.mint()
    assert first.key != second.key and first.key_id != second.key_id
    assert first.key.startswith(first.key_id + ".") and first.key_id.startswith("rk_")
    assert len(first.key) > 40
    assert first.key_hash == credentials.hash_key(first.key) != credentials.hash_key(second.key)
    assert first.key not in first.key_hash


def test_intake_refuses_to_start_with_a_bad_sla_file(tmp_path):
    bad = tmp_path / "sla.yaml"
    bad.write_text("version: v1\ndefault: {intake: 30s, approval: soon, payout: 1d, reconcile: 2d, notify: 1m}\n")
    run = subprocess.run([sys.executable, "-c", "import services.intake.main"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "SLA_FILE": str(bad)})
    assert run.returncode == 1
    assert "intake cannot start: bad SLA file" in run.stderr
    assert f"{bad}: default.approval: Value error, 'soon' is not a duration" in run.stderr
