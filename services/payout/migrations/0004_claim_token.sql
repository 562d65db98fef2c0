-- Who holds a `submitting` row: each claim stamps its own token. Renewing the lease and
-- writing the outcome both match on it (and on a lease not yet run out), so a worker whose
-- claim another replica took over writes nothing: no late `pending` over a `succeeded`, no
-- second `refund.paid` (issue 11). Rows claimed before this column existed carry NULL and
-- are taken again once their lease has run out.
ALTER TABLE payout.payouts ADD COLUMN claim_token uuid;
