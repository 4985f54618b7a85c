-- PostgreSQL twin of sqlite/0003_push_acks.sql.
-- What each peer has acknowledged, per object: a push counts as delivered on HTTP 2xx with
-- OCPI status 1xxx. What is out of date is derived by comparing this with the current state
-- (after a restart, or when events were missed), so nothing needs replaying.
CREATE TABLE ocpi_push_acks (
    peer_id       BIGINT NOT NULL,
    kind          TEXT NOT NULL,      -- location | evse | session | cdr
    object_id     TEXT NOT NULL,      -- station id | station id/connector id | session id | cdr id
    state         TEXT NOT NULL,      -- location/evse/session: status and last_updated; cdr: 'posted'
    periods_sent  BIGINT NOT NULL DEFAULT 0,  -- session: charging periods the peer holds
    location_url  TEXT,               -- cdr: the Location header the peer answered
    acked_at      TEXT NOT NULL,
    PRIMARY KEY (peer_id, kind, object_id)
);
