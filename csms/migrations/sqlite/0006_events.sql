-- The transactional outbox (csms/outbox.py): every domain event, committed with the state
-- change it describes, read back in id order by the event relay and published. AUTOINCREMENT
-- so that an id is never given twice, even after the newest rows were pruned. Rows are kept
-- a few minutes once published.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    station_id  TEXT,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
