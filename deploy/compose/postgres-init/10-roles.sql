-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d), as the superuser.
-- One login role per schema, owning that schema and nothing else: a service (or the gateway simulator)
-- cannot read another's tables. The roles have no password: this local database trusts its network
-- (POSTGRES_HOST_AUTH_METHOD in compose.yaml); Kubernetes gets its DSNs from Secrets (deploy/k8s/README.md).
CREATE ROLE refund_intake LOGIN;
CREATE SCHEMA intake AUTHORIZATION refund_intake;
CREATE ROLE refund_approval LOGIN;
CREATE SCHEMA approval AUTHORIZATION refund_approval;
CREATE ROLE refund_payout LOGIN;
CREATE SCHEMA payout AUTHORIZATION refund_payout;
CREATE ROLE refund_reconcile LOGIN;
CREATE SCHEMA reconcile AUTHORIZATION refund_reconcile;
CREATE ROLE refund_notify LOGIN;
CREATE SCHEMA notify AUTHORIZATION refund_notify;
CREATE ROLE gateway_sim LOGIN;
CREATE SCHEMA gateway_sim AUTHORIZATION gateway_sim;
