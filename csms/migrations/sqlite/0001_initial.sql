-- Stations, their live state, id tags, transactions and every sampled value.
-- Times are UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (fixed width, sortable).
-- A *_raw column holds the text the station sent when the stored time had to be corrected.

CREATE TABLE stations (
    id                  TEXT PRIMARY KEY,
    defined             INTEGER NOT NULL DEFAULT 1,   -- 0: accepted unknown, no definition yet
    location_id         TEXT UNIQUE,
    definition          TEXT,                         -- JSON: location and evses
    password_hash       TEXT,
    boot_status         TEXT NOT NULL DEFAULT 'Accepted',
    vendor              TEXT,
    model               TEXT,
    serial_number       TEXT,
    firmware_version    TEXT,
    boot_info           TEXT,                         -- JSON: the whole last BootNotification
    first_boot_at       TEXT,                         -- first accepted boot (commissioning)
    last_boot_at        TEXT,
    last_seen_at        TEXT,
    diagnostics_status  TEXT,
    firmware_status     TEXT,
    config_status       TEXT NOT NULL DEFAULT 'unknown', -- unknown | compliant | non_compliant
    config_reasons      TEXT,                         -- JSON list of reasons when non-compliant
    config_snapshot     TEXT,                         -- JSON: GetConfiguration read-back
    config_checked_at   TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE TABLE evses (
    uid           TEXT PRIMARY KEY COLLATE NOCASE,
    station_id    TEXT NOT NULL REFERENCES stations(id) ON DELETE CASCADE,
    connector_id  INTEGER NOT NULL,
    UNIQUE (station_id, connector_id)
);

CREATE TABLE connector_status (
    station_id         TEXT NOT NULL REFERENCES stations(id) ON DELETE CASCADE,
    connector_id       INTEGER NOT NULL,
    status             TEXT NOT NULL,
    error_code         TEXT NOT NULL,
    info               TEXT,
    vendor_id          TEXT,
    vendor_error_code  TEXT,
    timestamp          TEXT NOT NULL,
    timestamp_raw      TEXT,
    received_at        TEXT NOT NULL,
    PRIMARY KEY (station_id, connector_id)
);

CREATE TABLE id_tags (
    id_tag         TEXT PRIMARY KEY COLLATE NOCASE,
    status         TEXT NOT NULL,
    expiry_date    TEXT,
    parent_id_tag  TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE transactions (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    station_id         TEXT NOT NULL,
    connector_id       INTEGER NOT NULL,
    id_tag             TEXT NOT NULL,
    id_tag_status      TEXT NOT NULL,          -- what StartTransaction.conf said
    reservation_id     INTEGER,
    meter_start        INTEGER NOT NULL,
    start_time         TEXT NOT NULL,
    start_time_raw     TEXT,
    start_received_at  TEXT NOT NULL,
    start_key          TEXT NOT NULL UNIQUE,   -- makes a replayed StartTransaction idempotent
    meter_stop         INTEGER,
    stop_time          TEXT,
    stop_time_raw      TEXT,
    stop_reason        TEXT,
    stop_id_tag        TEXT,
    stop_received_at   TEXT,
    flags              TEXT NOT NULL DEFAULT '[]'  -- JSON list: unknown_tag, meter_backwards, ...
);
CREATE INDEX ix_transactions_station ON transactions (station_id, start_time);
CREATE INDEX ix_transactions_start ON transactions (start_time);
CREATE INDEX ix_transactions_active ON transactions (station_id, connector_id)
    WHERE stop_received_at IS NULL;

CREATE TABLE meter_values (
    id                       INTEGER PRIMARY KEY,
    station_id               TEXT NOT NULL,
    connector_id             INTEGER NOT NULL,
    transaction_id           INTEGER,        -- ours, when the value belongs to a known transaction
    reported_transaction_id  INTEGER,        -- what the station said, when we did not know it
    source                   TEXT NOT NULL,  -- MeterValues | StopTransaction
    timestamp                TEXT NOT NULL,
    timestamp_raw            TEXT,
    measurand                TEXT NOT NULL,
    phase                    TEXT,
    unit                     TEXT,
    context                  TEXT NOT NULL,
    location                 TEXT NOT NULL,
    format                   TEXT NOT NULL,
    value_raw                TEXT NOT NULL,
    value                    REAL,           -- normalised: Wh, varh, W, var, ...
    norm_unit                TEXT NOT NULL,
    received_at              TEXT NOT NULL
);
CREATE INDEX ix_meter_values_tx ON meter_values (transaction_id, timestamp);
CREATE INDEX ix_meter_values_station ON meter_values (station_id, timestamp);

-- What could not be attached where it belongs: stored, flagged, never lost.
CREATE TABLE anomalies (
    id              INTEGER PRIMARY KEY,
    station_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,
    transaction_id  INTEGER,
    detail          TEXT NOT NULL,    -- JSON
    received_at     TEXT NOT NULL
);
CREATE INDEX ix_anomalies_station ON anomalies (station_id, received_at);

CREATE TABLE unknown_stations (
    charge_point_id      TEXT PRIMARY KEY,
    first_seen_at        TEXT NOT NULL,
    last_seen_at         TEXT NOT NULL,
    attempts             INTEGER NOT NULL,
    last_remote_address  TEXT
);

CREATE TABLE data_transfers (
    id           INTEGER PRIMARY KEY,
    station_id   TEXT NOT NULL,
    vendor_id    TEXT NOT NULL,
    message_id   TEXT,
    data         TEXT,
    answer       TEXT NOT NULL,
    received_at  TEXT NOT NULL
);

CREATE TABLE commands (
    id           INTEGER PRIMARY KEY,
    station_id   TEXT NOT NULL,
    action       TEXT NOT NULL,
    request      TEXT NOT NULL,   -- JSON
    outcome      TEXT NOT NULL,   -- pending | ok | offline | timeout | call_error | failed
    response     TEXT,            -- JSON: the answer, or the CallError
    origin       TEXT NOT NULL,   -- api | provisioning | ocpi | ...
    sent_at      TEXT NOT NULL,
    finished_at  TEXT
);
CREATE INDEX ix_commands_station ON commands (station_id, sent_at);
