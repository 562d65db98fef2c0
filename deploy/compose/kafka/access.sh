# Generated from shared/runtime/kafka_auth.py ACCESS: do not edit; regenerate with
#   .venv/bin/python -m shared.runtime.kafka_auth compose-acls > deploy/compose/kafka/access.sh
# Sourced by init.sh: `user <principal> <variable holding its password>`,
# `acl <kafka-acls --add arguments>`.
user intake KAFKA_PASSWORD_INTAKE
acl --allow-principal User:intake --operation Describe --operation Read --group refund-intake --topic refunds.denied --topic refunds.payout-exits --topic refunds.payout-failed
acl --allow-principal User:intake --operation Describe --operation Write --topic refunds.accepted --topic refunds.dlq --topic refunds.reinstated --topic refunds.rejected
acl --allow-principal User:intake --operation Describe --operation Read --operation Write --topic refunds.requested
user approval KAFKA_PASSWORD_APPROVAL
acl --allow-principal User:approval --operation Describe --operation Read --group refund-approval --topic refunds.accepted
acl --allow-principal User:approval --operation Describe --operation Write --topic refunds.approved --topic refunds.denied --topic refunds.dlq --topic refunds.held
user payout KAFKA_PASSWORD_PAYOUT
acl --allow-principal User:payout --operation Describe --operation Read --group refund-payout --topic refunds.approved --topic refunds.destinations --topic refunds.reinstated
acl --allow-principal User:payout --operation Describe --operation Write --topic refunds.dlq --topic refunds.paid --topic refunds.payout-exits --topic refunds.payout-failed --topic refunds.payout-submitted
user reconcile KAFKA_PASSWORD_RECONCILE
acl --allow-principal User:reconcile --operation Describe --operation Read --group refund-reconcile --topic refunds.paid
acl --allow-principal User:reconcile --operation Describe --operation Write --topic refunds.discrepancy --topic refunds.dlq --topic refunds.reconciled
user notify KAFKA_PASSWORD_NOTIFY
acl --allow-principal User:notify --operation Describe --operation Read --group refund-notify --topic refunds.accepted --topic refunds.approved --topic refunds.denied --topic refunds.discrepancy --topic refunds.held --topic refunds.paid --topic refunds.payout-failed --topic refunds.payout-submitted --topic refunds.reconciled --topic refunds.rejected
acl --allow-principal User:notify --operation Describe --operation Write --topic refunds.destinations --topic refunds.dlq --topic refunds.status
user platform-shop-test KAFKA_PASSWORD_PLATFORM_SHOP_TEST
acl --allow-principal User:platform-shop-test --operation Describe --operation Write --topic refunds.requested
acl --allow-principal User:platform-shop-test --operation Describe --operation Read --topic refunds.status
acl --allow-principal User:platform-shop-test --resource-pattern-type prefixed --operation Describe --operation Read --group platform-shop-test
user platform-demo KAFKA_PASSWORD_PLATFORM_DEMO
acl --allow-principal User:platform-demo --operation Describe --operation Write --topic refunds.requested
acl --allow-principal User:platform-demo --operation Describe --operation Read --topic refunds.status
acl --allow-principal User:platform-demo --resource-pattern-type prefixed --operation Describe --operation Read --group platform-demo
user operator KAFKA_PASSWORD_OPERATOR
acl --allow-principal User:operator --operation Describe --cluster --group '*'
acl --allow-principal User:operator --operation Describe --operation DescribeConfigs --operation Read --topic '*'
acl --allow-principal User:operator --resource-pattern-type prefixed --operation Describe --operation Read --group operator
