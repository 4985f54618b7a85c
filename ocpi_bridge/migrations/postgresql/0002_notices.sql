-- PostgreSQL twin of sqlite/0002_notices.sql.
-- MOBI.E rule R2: the e-mail announcing a station's commissioning, one per station.
-- The station's facts are kept so the message can be composed again with the current
-- [ocpi.notices] settings (a corrected sender or server) when a delivery is retried.
-- Times are UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ'.
CREATE TABLE ocpi_notices (
    station_id        TEXT PRIMARY KEY,
    commissioned_at   TEXT NOT NULL,       -- the first accepted BootNotification
    vendor            TEXT NOT NULL,
    model             TEXT NOT NULL,
    serial_number     TEXT,
    firmware_version  TEXT,
    subject           TEXT NOT NULL,
    body              TEXT NOT NULL,       -- the text part, as composed last
    message           TEXT NOT NULL,       -- the whole message (.eml text), as sent last
    created_at        TEXT NOT NULL,
    delivery          TEXT,                -- smtp | file, once delivered
    delivered_at      TEXT,
    file              TEXT,                -- the .eml written, for delivery = 'file'
    attempts          BIGINT NOT NULL DEFAULT 0,
    last_error        TEXT,
    next_attempt_at   TEXT                 -- NULL once delivered
);
CREATE INDEX ix_ocpi_notices_pending ON ocpi_notices (next_attempt_at)
    WHERE delivered_at IS NULL;
CREATE INDEX ix_ocpi_notices_created ON ocpi_notices (created_at);
