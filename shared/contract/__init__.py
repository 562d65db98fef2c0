"""The public contract a platform may pin: the CloudEvents envelope, the events and their fields, money,
ids, topics and the lifecycle (SPEC.md). It imports nothing from the runtime."""
