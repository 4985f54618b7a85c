-- PostgreSQL twin of sqlite/0013_local_lists.sql.
-- Local authorization lists kept in sync (csms/local_lists.py): per station, whether csms
-- manages its list, what the station acknowledged (version and entries), the lengths it
-- reported, what is left out for want of room, and the last sync's outcome. No row: the
-- configured default (local_lists.enabled_by_default), nothing acknowledged yet.
CREATE TABLE local_lists (
    station_id       TEXT PRIMARY KEY,
    enabled          BIGINT NOT NULL,
    state            TEXT NOT NULL,            -- new | synced | pending | error | unsupported | disabled_on_station
    version_sent     BIGINT,                  -- the latest listVersion sent
    version_acked    BIGINT,                  -- the latest listVersion the station accepted
    entries          TEXT,                     -- JSON: the acknowledged list; NULL: not known
    entries_count    BIGINT NOT NULL DEFAULT 0,
    list_max         BIGINT,                  -- LocalAuthListMaxLength as read
    send_max         BIGINT,                  -- SendLocalListMaxLength as read
    left_out         BIGINT NOT NULL DEFAULT 0,
    full_wanted      BIGINT NOT NULL DEFAULT 0,
    last_sync_at     TEXT,                     -- the last time the station held the desired list
    last_attempt_at  TEXT,
    last_error       TEXT,
    updated_at       TEXT NOT NULL
);
