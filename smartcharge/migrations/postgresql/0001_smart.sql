-- Issue 18: smart charging. The charging profiles csms wants each station to hold (it
-- re-applies them after a reboot or a reconnection), the sites that share a connection,
-- and what each EVSE of a site was last given.
CREATE TABLE smart_profiles (
    station_id     TEXT NOT NULL,
    profile_id     BIGINT NOT NULL,        -- chargingProfileId, unique per station
    connector_id   INTEGER NOT NULL,
    purpose        TEXT NOT NULL,          -- ChargePointMaxProfile | TxDefaultProfile | TxProfile
    stack_level    INTEGER NOT NULL,
    transaction_id BIGINT,                -- a TxProfile's transaction (ours)
    origin         TEXT NOT NULL,          -- operator | site:<id> | ocpi:<party>
    body           TEXT NOT NULL,          -- smartcharge.profiles.Profile (JSON)
    state          TEXT NOT NULL,          -- pending | installed | rejected | failed
    last_error     TEXT,
    sent_at        TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (station_id, profile_id)
);
CREATE INDEX smart_profiles_origin ON smart_profiles (origin);

CREATE TABLE smart_sites (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    rules         TEXT NOT NULL,           -- smartcharge.share.SiteRules (JSON)
    dynamic_limit TEXT,                    -- a limit set through the API (rules' unit)
    dynamic_until TEXT,                    -- until when (NULL: until removed)
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE smart_site_members (
    station_id TEXT PRIMARY KEY,           -- a station is behind one connection
    site_id    TEXT NOT NULL REFERENCES smart_sites (id) ON DELETE CASCADE,
    priority   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX smart_site_members_site ON smart_site_members (site_id);

-- what each EVSE of a site was last sent (the hysteresis compares with it)
CREATE TABLE smart_allocations (
    station_id     TEXT NOT NULL,
    connector_id   INTEGER NOT NULL,
    site_id        TEXT NOT NULL,
    transaction_id BIGINT,
    limit_a        TEXT NOT NULL,
    state          TEXT NOT NULL,          -- sent | rejected | failed
    updated_at     TEXT NOT NULL,
    PRIMARY KEY (station_id, connector_id)
);

-- the power of each EVSE of a site, one row per minute (the site page's chart)
CREATE TABLE smart_site_power (
    site_id      TEXT NOT NULL,
    minute       TEXT NOT NULL,            -- the minute's start (UTC, database time text)
    station_id   TEXT NOT NULL,
    connector_id INTEGER NOT NULL,
    power_w      DOUBLE PRECISION NOT NULL,            -- the highest sample of that minute
    limit_a      DOUBLE PRECISION,         -- the site's limit then (A per phase)
    PRIMARY KEY (site_id, minute, station_id, connector_id)
);

-- a session's limit set by a smart charging party (OCPI ChargingProfiles): sent as the
-- transaction's TxProfile, capped by its site's share
CREATE TABLE smart_session_limits (
    transaction_id BIGINT PRIMARY KEY,
    origin         TEXT NOT NULL,          -- ocpi:<country>/<party>
    schedule       TEXT NOT NULL,          -- csms.ports.SessionSchedule (JSON)
    created_at     TEXT NOT NULL
);
