"""Just enough of asyncpg and aiokafka for a Stage's inbox, outbox and sends, for unit tests of the runtime."""

import asyncio


class FakeConn:
    """Every event is new to the inbox; outbox rows get ids and are kept as (topic, value)."""

    def __init__(self) -> None:
        self.next_id = 0
        self.outbox: list[tuple[str, bytes]] = []
        self.dead_letters: list[tuple[str, str]] = []  # (reason, error)

    def transaction(self):
        return self

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False

    async def execute(self, sql, *args):
        return "OK"

    async def fetch(self, sql, *args):
        if "inbox" in sql:
            return [{"source": source, "event_id": event_id} for source, event_id in zip(*args, strict=True)]
        if "dead_letters" in sql:
            self.dead_letters += list(zip(args[7], args[8], strict=True))
            return [{"id": len(self.dead_letters) - n} for n in reversed(range(len(args[7])))]
        self.outbox += list(zip(args[0], args[2], strict=True))
        self.next_id += len(args[0])
        return [{"id": self.next_id - n} for n in range(len(args[0]))]


class FakePool:
    def __init__(self) -> None:
        self.conn = FakeConn()

    def acquire(self):
        return self.conn


class FakeProducer:
    """Records what the stage sends (topic, key, value); every send is acked at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send(self, topic, value, key=None, headers=None):
        self.sent.append((topic, key, value))
        acked = asyncio.get_running_loop().create_future()  # as aiokafka's: a future the broker's ack resolves
        acked.set_result(None)
        return acked
