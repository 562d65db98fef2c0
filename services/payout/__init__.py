"""Payout: executes approved refunds at the gateway, at most once per refund."""
