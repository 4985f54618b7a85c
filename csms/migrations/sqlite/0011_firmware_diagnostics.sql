-- Firmware campaigns and diagnostics (csms/firmware.py, csms/diagnostics.py).
-- Firmware images the operator registered: a file uploaded to <data_dir>/firmware/
-- (file_name, size, sha256) or a URL the stations download from themselves.
CREATE TABLE firmware_images (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    version     TEXT,
    file_name   TEXT,
    url         TEXT,
    size        INTEGER,
    sha256      TEXT,
    created_at  TEXT NOT NULL,
    created_by  TEXT
);

-- A campaign: one image for a set of stations, sent in waves (max_concurrent at once),
-- max_attempts per station (retry_seconds apart), within an optional daily window
-- (window_start/window_end, HH:MM in time_zone) and between not_before and not_after.
-- state: running | finished | cancelled.
CREATE TABLE firmware_campaigns (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id         INTEGER NOT NULL REFERENCES firmware_images(id),
    target_version   TEXT,
    state            TEXT NOT NULL,
    max_concurrent   INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    retry_seconds    INTEGER NOT NULL,
    station_timeout  INTEGER NOT NULL,
    download_retries INTEGER NOT NULL,
    window_start     TEXT,
    window_end       TEXT,
    time_zone        TEXT NOT NULL,
    not_before       TEXT,
    not_after        TEXT,
    created_at       TEXT NOT NULL,
    created_by       TEXT,
    updated_at       TEXT NOT NULL
);
CREATE INDEX ix_firmware_campaigns_state ON firmware_campaigns (state);

-- Each station of a campaign. state: pending | retry | sent | downloading | downloaded |
-- installing | installed | done | failed | cancelled. The download token of the current
-- attempt is kept as its SHA-256 only.
CREATE TABLE firmware_campaign_stations (
    campaign_id      INTEGER NOT NULL REFERENCES firmware_campaigns(id),
    station_id       TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    rebooted         INTEGER NOT NULL DEFAULT 0,
    version_before   TEXT,
    version_after    TEXT,
    last_status      TEXT,
    last_status_at   TEXT,
    sent_at          TEXT,
    next_attempt_at  TEXT,
    finished_at      TEXT,
    error            TEXT,
    token_hash       TEXT UNIQUE,
    token_expires_at TEXT,
    downloads        INTEGER NOT NULL DEFAULT 0,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (campaign_id, station_id)
);
CREATE INDEX ix_firmware_campaign_stations_station ON firmware_campaign_stations (station_id, state);

-- GetDiagnostics requests csms sent, with the one-time upload token (its SHA-256) and the
-- file that came; the newest 200 per station are kept.
CREATE TABLE diagnostics_requests (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    station_id      TEXT NOT NULL,
    token_hash      TEXT UNIQUE,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    start_time      TEXT,
    stop_time       TEXT,
    requested_by    TEXT,
    answer_file     TEXT,
    file_name       TEXT,
    file_size       INTEGER,
    uploaded_at     TEXT,
    last_status     TEXT,
    last_status_at  TEXT
);
CREATE INDEX ix_diagnostics_requests_station ON diagnostics_requests (station_id, id);
