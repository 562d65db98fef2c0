"""Approval: applies the refund policy to accepted refunds."""
