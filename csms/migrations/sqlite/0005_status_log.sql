-- Every StatusNotification, in arrival order, written in the same commit as the connector's
-- current status: what each status change was and when, so that a consumer that must report
-- every change (MOBI.E's rule R6) can replay the ones it has not delivered, also after a
-- restart. Pruned after csms's status_history_days.
CREATE TABLE status_log (
    id            INTEGER PRIMARY KEY,
    station_id    TEXT NOT NULL,
    connector_id  INTEGER NOT NULL,
    status        TEXT NOT NULL,
    error_code    TEXT NOT NULL,
    received_at   TEXT NOT NULL
);
CREATE INDEX ix_status_log_station ON status_log (station_id, id);
CREATE INDEX ix_status_log_received ON status_log (received_at);
