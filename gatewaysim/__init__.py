"""A payment gateway simulator: an external system with its own process, schema and HTTP API.

It keeps its own ledger (schema `gateway_sim`) the way a real gateway would:
payments, refunds idempotent per (account, key), outcomes deterministic per
payment (fault tokens, gatewaysim/faults.py), and a settlement line for every
refund that moved money. The design and the HTTP contract are in
docs/gateway-simulator.md. Run it with `python -m gatewaysim` (or
`uvicorn gatewaysim.main:app`).

Modules: `main` (the app, background loops), `stripe_api` / `adyen_api` (the two
personalities), `refunds` (one refund flow for both), `idempotency`, `ledger`
(all SQL, shared with the in-process `gateway.SimGateway` the pipeline still
uses), `webhooks` (outbox and sender), `reports` (file layouts), `objects`,
`faults`, `fx`, `settings`, `web`.

Settings (environment, read only by `settings.SimSettings`):

| variable | default | meaning |
|---|---|---|
| `SIM_ACCOUNTS` | `sim`, `stripe` (Stripe-shaped), `adyen` (Adyen-shaped) with local keys | JSON `{"<account>": {"personality": "stripe"\\|"adyen", "api_key", "webhook_url", "webhook_secret", "settlement_currency", "report_user", "report_password", "merchant_account"}}`; `webhook_secret` is the Stripe endpoint secret or the Adyen hex HMAC key; `report_user` defaults to `report`, `report_password` to the api_key, `merchant_account` to `SimMerchant` |
| `SIM_DATABASE_URL`, else `DATABASE_URL` | `postgresql://postgres@127.0.0.1:5432/refunds` | the PostgreSQL holding schema `gateway_sim` |
| `SIM_HTTP_HOST`, `SIM_HTTP_PORT` | `127.0.0.1`, `8090` | where `python -m gatewaysim` listens |
| `SIM_LOG_LEVEL` | `INFO` | |
| `SIM_DB_POOL_MAX` | 8 | connections in the pool |
| `SIM_DECLINE_PERCENT` | 2 | share of payments declined (as `sim-decline`) |
| `SIM_TRANSIENT_PERCENT`, `SIM_TIMEOUT_PERCENT`, `SIM_ASYNC_PERCENT`, `SIM_REVERSE_PERCENT`, `SIM_FEE_PERCENT` | 0 | shares of payments with `sim-5xx`, `sim-timeout`, `sim-async`, `sim-reverse`, `sim-fee` |
| `SIM_FEE_BPS` | 150 | the `sim-fee` fee, in bps of the settled amount (at least 1 minor unit) |
| `SIM_LATENCY_MS` | 0 | added to every call to an account |
| `SIM_CONFIRM_AFTER_SECONDS`, `SIM_REVERSE_AFTER_SECONDS` | 2, 2 | when `sim-async` refunds are confirmed, `sim-reverse` ones reversed |
| `SIM_TIMEOUT_HOLD_SECONDS` | 30 | how long a `sim-timeout` answer is held (past the client's timeout) |
| `SIM_FX_RATES` | `{}` | JSON `{"EUR/USD": "1.0812"}`; the inverse pair is derived |
| `SIM_FX_SPREAD_BPS` | 0 | how much worse than `SIM_FX_RATES` a cross-currency refund settles |
| `SIM_SEED_PAYMENTS` | `[]` | JSON `[{"account", "id", "amount", "currency"}]` created at start |
| `SIM_WEBHOOK_MAX_ATTEMPTS` | 10 | deliveries of one event before it is given up |
| `SIM_WEBHOOK_RETRY_BASE_SECONDS` | 1 | wait after the first failed delivery, doubled after each further one |
| `SIM_WEBHOOK_TIMEOUT_SECONDS` | 10 | how long one delivery may take |
| `SIM_ADYEN_BATCH_SECONDS` | 2 | how often Adyen-shaped accounts' open settlement lines are closed into a batch |
| `SIM_TICK_SECONDS` | 0.5 | how often time acts on the ledger and due webhooks are sent |
"""
