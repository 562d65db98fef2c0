"""Intake: validates refund requests, dedupes them, opens tickets, guards refundable balances."""
