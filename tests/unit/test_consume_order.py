"""A batch spanning partitions reaches the stage in publish order, each partition's own order kept."""

from aiokafka.structs import ConsumerRecord

from shared.runtime.consume import in_publish_order


def record(partition: int, offset: int, timestamp: int) -> ConsumerRecord:
    return ConsumerRecord("refunds.requested", partition, offset, timestamp, 0, None, b"", None, 0, 0, [])


def test_partitions_are_merged_by_timestamp():
    # Partition 0 was fetched first, but partition 3's request was published before it (the over-refund
    # case: two requests against one payment, keyed by their own ids): the earlier one is settled first.
    later = [record(0, 7, 2_000)]
    earlier = [record(3, 4, 1_000), record(3, 5, 3_000)]
    assert [(r.partition, r.offset) for r in in_publish_order([later, earlier])] == [(3, 4), (0, 7), (3, 5)]


def test_a_partitions_order_stays_when_its_clock_steps_back():
    stepped_back = [record(1, 10, 5_000), record(1, 11, 4_000)]  # a producer's clock went back
    other = [record(2, 1, 4_500)]
    ordered = [(r.partition, r.offset) for r in in_publish_order([stepped_back, other])]
    assert ordered.index((1, 10)) < ordered.index((1, 11))
    assert len(ordered) == 3
