"""Reconcile: matches paid refunds to the gateway's settlement report, to the minor unit."""
