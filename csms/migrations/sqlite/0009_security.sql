-- The OCPP 1.6 security extension (csms/security.py).
-- SecurityEventNotification: every event a station reported, the newest 1,000 per station.
CREATE TABLE security_events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    station_id     TEXT NOT NULL,
    type           TEXT NOT NULL,
    critical       INTEGER NOT NULL,
    timestamp      TEXT,
    timestamp_raw  TEXT,
    tech_info      TEXT,
    received_at    TEXT NOT NULL
);
CREATE INDEX ix_security_events_station ON security_events (station_id, id);

-- SignCertificate: each request, our answer (and why), and the life of what was signed:
-- state signing (accepted, not signed yet), delivering (CertificateSigned not answered yet),
-- delivered, refused (the station answered Rejected), failed (could not be signed),
-- rejected (the CSR was refused). The newest 100 per station are kept.
CREATE TABLE sign_requests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    station_id   TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    status       TEXT NOT NULL,
    reason       TEXT,
    csr          TEXT,
    subject      TEXT,
    state        TEXT NOT NULL,
    chain        TEXT,
    serial       TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    updated_at   TEXT NOT NULL
);
CREATE INDEX ix_sign_requests_station ON sign_requests (station_id, id);
CREATE INDEX ix_sign_requests_state ON sign_requests (state);

-- The station certificates csms signed (or its sign command returned).
CREATE TABLE station_certificates (
    serial           TEXT PRIMARY KEY,
    station_id       TEXT NOT NULL,
    subject          TEXT NOT NULL,
    issuer           TEXT NOT NULL,
    not_before       TEXT NOT NULL,
    not_after        TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    source           TEXT NOT NULL,
    sign_request_id  INTEGER,
    created_at       TEXT NOT NULL
);
CREATE INDEX ix_station_certificates_station ON station_certificates (station_id);
CREATE INDEX ix_station_certificates_not_after ON station_certificates (not_after);

-- GetLog and SignedUpdateFirmware requests csms sent (kind log | firmware), with the
-- one-time upload token of a GetLog (its SHA-256 only) and the file that came.
CREATE TABLE security_requests (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    station_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,
    request_id      INTEGER NOT NULL,
    token_hash      TEXT UNIQUE,
    details         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT,
    answer          TEXT,
    file_name       TEXT,
    file_size       INTEGER,
    uploaded_at     TEXT,
    last_status     TEXT,
    last_status_at  TEXT
);
CREATE INDEX ix_security_requests_station ON security_requests (station_id, kind, request_id);

-- LogStatusNotification (kind log) and SignedFirmwareStatusNotification (kind firmware),
-- the newest 200 of each kind per station.
CREATE TABLE security_statuses (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    station_id   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    request_id   INTEGER,
    status       TEXT NOT NULL,
    received_at  TEXT NOT NULL
);
CREATE INDEX ix_security_statuses_station ON security_statuses (station_id, kind, id);
