-- Every folded event updates refund_status and none of those updates is HOT (stage and timeline, both
-- indexed, change with most events), so each index costs every update an entry. (source, request_id)
-- is served by the request_id index (0054) with a filter on source: request ids repeat across sources
-- only by chance, so that reads one or a few entries.
DROP INDEX IF EXISTS notify.refund_status_request;
