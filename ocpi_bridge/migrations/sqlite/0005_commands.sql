-- OCPI commands received (START_SESSION, STOP_SESSION, UNLOCK_CONNECTOR), what we answered,
-- what the station did, and the delivery of the CommandResult to the response_url. A
-- command waiting for its outcome survives a restart of the process.
CREATE TABLE ocpi_commands (
    id                       TEXT PRIMARY KEY,
    peer_id                  INTEGER NOT NULL,
    party                    TEXT NOT NULL,      -- the requesting party, CC/PID
    command                  TEXT NOT NULL,
    request                  TEXT NOT NULL,      -- JSON: the body as received
    response_url             TEXT,
    station_id               TEXT,
    connector_id             INTEGER,
    id_tag                   TEXT,
    transaction_id           INTEGER,
    authorization_reference  TEXT,
    response                 TEXT NOT NULL,      -- JSON: the CommandResponse we answered
    conf                     TEXT,               -- the station's answer status, or CallError
    conf_at                  TEXT,
    result                   TEXT,               -- JSON: the CommandResult, once known
    decided_at               TEXT,
    deadline                 TEXT,               -- when the outcome times out
    delivered_at             TEXT,
    delivery_attempts        INTEGER NOT NULL DEFAULT 0,
    next_delivery_at         TEXT,
    last_error               TEXT,
    created_at               TEXT NOT NULL
);
CREATE INDEX ix_ocpi_commands_tx ON ocpi_commands (transaction_id);
CREATE INDEX ix_ocpi_commands_open ON ocpi_commands (decided_at, delivered_at);
CREATE INDEX ix_ocpi_commands_created ON ocpi_commands (created_at);
