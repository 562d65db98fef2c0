# The contract topics (shared/contract/topics.py), as `create` calls of init.sh, which sources this;
# tests/deploy checks this list against shared/contract/topics.py.
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
