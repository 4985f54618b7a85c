-- Bulk commands and alerts (issue 16, items 5 and 10; csms/bulk.py, csms/alerts.py).
-- A bulk job: one OCPP action and payload for the stations its selection resolved to when it
-- was created (kept in bulk_items, one row per station, in order). state: running |
-- cancelled | finished. The payload is kept as sent (a restarted csms resumes the job); the
-- API and the web show it with secret values masked.
CREATE TABLE bulk_jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    action        TEXT NOT NULL,
    payload       TEXT NOT NULL,
    selection     TEXT NOT NULL,
    concurrency   INTEGER NOT NULL,
    total         INTEGER NOT NULL,
    state         TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    finished_at   TEXT
);
CREATE INDEX ix_bulk_jobs_state ON bulk_jobs (state);

-- each station of a job: pending | sent | accepted | rejected | error | offline | timeout |
-- unknown (in flight when csms stopped) | cancelled; the answer or error, and when
CREATE TABLE bulk_items (
    job_id      INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    station_id  TEXT NOT NULL,
    state       TEXT NOT NULL,
    answer      TEXT,
    updated_at  TEXT,
    PRIMARY KEY (job_id, position)
);
CREATE INDEX ix_bulk_items_state ON bulk_items (job_id, state, position);

-- Alerts: what happened (kind: faulted, offline, recovered, push_failing, push_recovered,
-- test), about what (subject: a station id or "peer:<id>"), and its details (JSON).
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    details     TEXT NOT NULL
);
CREATE INDEX ix_alerts_kind ON alerts (kind, id);
CREATE INDEX ix_alerts_subject ON alerts (subject, id);

-- each alert's delivery per channel (webhook:<n> | email): pending | delivered | failed
-- (gave up after the configured attempts), retried with backoff at next_attempt_at; a
-- worker holds one for a while (lease_until) while it tries
CREATE TABLE alert_deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id         INTEGER NOT NULL,
    channel          TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT,
    lease_until      TEXT,
    last_error       TEXT,
    delivered_at     TEXT
);
CREATE INDEX ix_alert_deliveries_due ON alert_deliveries (state, next_attempt_at);
CREATE INDEX ix_alert_deliveries_alert ON alert_deliveries (alert_id);

-- the conditions an alert was raised for and that have not ended yet (a station offline, a
-- connector faulted, a peer's pushes failing): one alert per outage, across restarts
CREATE TABLE alert_conditions (
    key        TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    opened_at  TEXT NOT NULL,
    alert_id   INTEGER
);
