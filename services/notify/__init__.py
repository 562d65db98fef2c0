"""Notify: the status projection and feed, the tracking API and customer page, and customer/platform notifications."""
