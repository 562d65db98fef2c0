"""The refund pipeline's public contract as code: envelope, events, money, topics.

Holds no business rules; every service imports it, it imports no service.
"""
