-- When a transaction last changed (start, meter value, stop), for consumers that pull
-- changes since a time; and who owns the token that started it (set by the token source
-- that accepted it, e.g. an eMSP's party for OCPI tokens).
ALTER TABLE transactions ADD COLUMN updated_at TEXT;
ALTER TABLE transactions ADD COLUMN tag_owner TEXT;
UPDATE transactions SET updated_at = COALESCE(stop_received_at, start_received_at);
CREATE INDEX ix_transactions_updated ON transactions (updated_at);
