-- What each webhook attempt sent and what the receiver answered (both cut to a bounded size), for the
-- deliveries page and GET /v1/webhook-deliveries.
ALTER TABLE webhook_attempts ADD COLUMN request_body TEXT;
ALTER TABLE webhook_attempts ADD COLUMN response_body TEXT;
