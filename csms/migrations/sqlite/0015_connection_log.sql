-- When each station connected to csms and when it disconnected (one row each), so that a
-- station's status timeline can show the time it was offline (availability, AFIR-style
-- uptime): the events table keeps its rows a few minutes only. Written with the writer's
-- next batch (csms/repositories/connections.py); pruned after csms's status history,
-- keeping each station's latest row.
CREATE TABLE connection_log (
    id          INTEGER PRIMARY KEY,
    station_id  TEXT NOT NULL,
    connected   INTEGER NOT NULL,
    at          TEXT NOT NULL
);
CREATE INDEX ix_connection_log_station ON connection_log (station_id, at);
CREATE INDEX ix_connection_log_at ON connection_log (at);
