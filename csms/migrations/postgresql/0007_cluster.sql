-- Several OCPP nodes and delivery workers on one database (csms/members.py).
--
-- events.tx: the transaction that inserted the row (its 64-bit id). With several writers,
-- ids are not given in commit order; the relay reads in (tx, id) order and only the rows of
-- transactions older than every one still running, so that none is ever passed over.
ALTER TABLE events ADD COLUMN tx BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX events_tx_id ON events (tx, id);

-- Every running process: where its internal routes are, when it was last alive, and how
-- far its event relay has read (the events are pruned only behind every relay).
CREATE TABLE cluster_members (
    member_id   TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    url         TEXT,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  TEXT NOT NULL,
    seen_at     TEXT NOT NULL,
    cursor_tx   BIGINT
);

-- Which node holds each connected station's websocket (commands are routed there; a
-- station that connects elsewhere replaces it).
CREATE TABLE station_presence (
    station_id   TEXT PRIMARY KEY,
    member_id    TEXT NOT NULL,
    connected_at TEXT NOT NULL
);
CREATE INDEX station_presence_member ON station_presence (member_id);

-- The secret the processes authenticate each other's internal calls with, made by the
-- first one to start (whoever can read this database can read everything else too).
CREATE TABLE cluster_secret (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    secret  TEXT NOT NULL
)
