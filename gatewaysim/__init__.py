"""A payment gateway simulator: a stand-in for an external gateway, not a service.

It keeps its own ledger (schema `gateway_sim`) the way a real gateway would:
refunds are idempotent by key, outcomes are deterministic per payment, and every
successful refund produces a settlement line for its settlement report. Payout
talks to it as a gateway; reconcile reads its settlement report. Neither service
reads the other's data through it.
"""
