#!/bin/sh
# Creates the contract topics (shared/topics.py) in the compose Kafka; tests/deploy
# checks this list against shared/topics.py.
set -eu
create() {
    topic=$1 partitions=$2
    shift 2
    /opt/kafka/bin/kafka-topics.sh --bootstrap-server "${BOOTSTRAP:-kafka:9092}" --create --if-not-exists \
        --topic "$topic" --partitions "$partitions" --replication-factor 1 "$@"
}
create refunds.requested 6
create refunds.accepted 6
create refunds.rejected 6
create refunds.dlq 1 --config retention.ms=2592000000
create refunds.approved 6
create refunds.denied 6
create refunds.held 6
create refunds.payout-submitted 6
create refunds.paid 6
create refunds.payout-failed 6
create refunds.reconciled 6
create refunds.discrepancy 6
create refunds.status 6 --config cleanup.policy=compact --config min.compaction.lag.ms=60000
