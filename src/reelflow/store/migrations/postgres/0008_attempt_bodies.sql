-- What each webhook attempt sent and what the receiver answered (both cut to a bounded size), for the
-- deliveries page and GET /v1/webhook-deliveries. A redelivery's retries count their window from it
-- (retry_from), not from when the delivery was first made.
ALTER TABLE webhook_attempts ADD COLUMN request_body TEXT;
ALTER TABLE webhook_attempts ADD COLUMN response_body TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN retry_from DOUBLE PRECISION;
