-- PostgreSQL twin of sqlite/0001_adhoc.sql.
-- Issue 17: ad hoc charging. One row per payment: a driver's hold at one EVSE (kind
-- 'online') or a charge paid at the station's own terminal (kind 'terminal').
CREATE TABLE adhoc_payments (
    id                 TEXT PRIMARY KEY,      -- random, 128 bits: the driver's link
    kind               TEXT NOT NULL,         -- online | terminal
    station_id         TEXT NOT NULL,
    connector_id       BIGINT NOT NULL,
    evse_uid           TEXT NOT NULL,
    id_tag             TEXT NOT NULL UNIQUE,  -- one-time tag (online) or the terminal's
    provider           TEXT NOT NULL,         -- manual | stripe | terminal
    reference          TEXT,                  -- the provider's id of the hold
    state              TEXT NOT NULL,         -- see adhoc.core.State
    reason             TEXT,                  -- why it was released (adhoc.core.Reason)
    currency           TEXT NOT NULL,
    hold_amount        BIGINT NOT NULL,      -- minor units
    final_amount       BIGINT,               -- the price, fixed before the capture
    captured_amount    BIGINT,
    tariff_id          TEXT NOT NULL,
    tariff             TEXT NOT NULL,         -- the tariff shown to the driver (JSON)
    place              TEXT NOT NULL,         -- location and EVSE as shown (JSON)
    email              TEXT,
    language           TEXT NOT NULL,
    transaction_id     BIGINT UNIQUE,
    method             TEXT,                  -- card, mb_way... when the provider says
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    authorized_at      TEXT,
    start_requested_at TEXT,
    started_at         TEXT,
    stop_requested_at  TEXT,
    stopped_at         TEXT,
    finished_at        TEXT,
    cost_sent_at       TEXT,                  -- the latest RunningCost sent (costmsg)
    final_cost_sent    BIGINT NOT NULL DEFAULT 0,
    attempts           BIGINT NOT NULL DEFAULT 0,  -- provider calls that failed in a row
    next_try_at        TEXT,
    last_error         TEXT
);
CREATE INDEX adhoc_payments_open ON adhoc_payments (state, updated_at);
CREATE INDEX adhoc_payments_created ON adhoc_payments (created_at);

-- The EVSE a payment holds, from its creation until it ends: a second driver cannot pay
-- for an EVSE someone is paying for or charging at (the primary key decides a race).
CREATE TABLE adhoc_claims (
    station_id    TEXT NOT NULL,
    connector_id  BIGINT NOT NULL,
    payment_id    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (station_id, connector_id)
);

-- Receipts: numbered in sequence without gaps (adhoc_counters), never changed.
CREATE TABLE adhoc_receipts (
    number        BIGINT PRIMARY KEY,
    payment_id    TEXT NOT NULL UNIQUE,
    issued_at     TEXT NOT NULL,
    body          TEXT NOT NULL,              -- JSON of adhoc.receipts.Receipt
    emailed_at    TEXT,
    email_error   TEXT
);
CREATE TABLE adhoc_counters (
    name   TEXT PRIMARY KEY,
    value  BIGINT NOT NULL
);
INSERT INTO adhoc_counters (name, value) VALUES ('receipt', 0);

-- Provider notifications already handled (a replay is answered and ignored).
CREATE TABLE adhoc_webhook_events (
    provider     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    PRIMARY KEY (provider, event_id)
);

-- Per-station choices: show the price on the station's display (costmsg DataTransfer).
CREATE TABLE adhoc_stations (
    station_id  TEXT PRIMARY KEY,
    costmsg     BIGINT NOT NULL DEFAULT 0,
    updated_at  TEXT NOT NULL
);
