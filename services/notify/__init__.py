"""Notify: projects every lifecycle event into one status per refund and the status feed."""
