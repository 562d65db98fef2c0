#!/bin/sh
# Prints the simulator's two Secrets for a local/test cluster, with freshly generated keys:
#   gatewaysim-accounts (sim-accounts: SIM_ACCOUNTS, the simulator's accounts and webhook targets) and
#   gatewaysim-routes (gateway-routes: GATEWAY_ROUTES of payout, approval and reconcile),
# which must carry the same keys. Usage:
#   sh deploy/k8s/components/gateway-simulator/local-secrets.sh | kubectl -n refunds-dev apply -f -
# Re-running it replaces the keys: restart the simulator and the three services afterwards.
set -eu
sim_url=${SIM_URL:-http://gatewaysim}
payout_url=${PAYOUT_URL:-http://refund-payout}
merchant=RefundPipelineLocal

hex() { openssl rand -hex "$1"; }

accounts='' routes='' sep=''
# Gateway name (the simulator's account) and its personality (docs/gateway-simulator.md).
for entry in sim:stripe stripe:stripe adyen:adyen; do
    name=${entry%%:*} kind=${entry#*:}
    common="\"api_key\": \"${kind}_local_$(hex 16)\""
    if [ "$kind" = adyen ]; then
        hmac_key=$(hex 32 | tr a-f A-F) report_password=$(hex 12)
        report="\"merchant_account\": \"$merchant\", \"report_user\": \"report@$merchant\", \"report_password\": \"$report_password\""
        account="\"webhook_secret\": \"$hmac_key\", $report"
        route="\"hmac_key\": \"$hmac_key\", $report"
    else
        webhook_secret="whsec_$(hex 16)"
        account="\"webhook_secret\": \"$webhook_secret\""
        route="$account"
    fi
    accounts="$accounts$sep\"$name\": {\"personality\": \"$kind\", $common, $account, \"webhook_url\": \"$payout_url/v1/gateway-events/$name\"}"
    routes="$routes$sep\"$name\": {\"kind\": \"$kind\", \"base_url\": \"$sim_url/$name\", \"simulator\": true, $common, $route}"
    sep=', '
done

cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: gatewaysim-accounts
type: Opaque
stringData:
  sim-accounts: '{$accounts}'
---
apiVersion: v1
kind: Secret
metadata:
  name: gatewaysim-routes
type: Opaque
stringData:
  gateway-routes: '{$routes}'
EOF
